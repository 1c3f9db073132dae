"""The command line behind the Makefile: validate → render → (lock) → pyinfra → report.

    python -m shipyard render [--env E ...] [--check]
    python -m shipyard validate --env E
    python -m shipyard up --env E [--lock-wait S] [--limit h1,h3]
    python -m shipyard down --env E [--volumes]
    python -m shipyard secrets-init --env E
    python -m shipyard secrets-rotate --env E --name NAME [--lock-wait S]
    python -m shipyard secrets-put --env E --name NAME --file PATH
    python -m shipyard status --env E | plan --env E
    python -m shipyard logs --env E --service S [--tail N] [--follow] [--since 10m] [--level warning]
    python -m shipyard trace --env E --request-id R | --task-id T [--since 24h]
    python -m shipyard audit --env E [--last N]
    python -m shipyard release --env E [--version V] [--prebuilt] | rollback --env E | releases --env E
    python -m shipyard commands [--make-help]
    python -m shipyard <a component's command> --env E [--option V ...]   (e.g. pg-promote --replica R)

The core's commands are listed here; the components' (pg-*, redis-failover, consul-members,
config-*) come from the registry (``Component.commands``), so a new component's command appears
in `make help` and here with no change to this file or the Makefile.

Every command that changes an environment (``CHANGING`` here, ``Command.changes`` for the
components') leaves an event in its audit trail (``audited``, shipyard.audit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from shipyard import audit, bluegreen, commands, topology, tracing
from shipyard.component import Command, CommandContext
from shipyard.components import COMPONENTS
from shipyard.controller import builder, teardown
from shipyard.controller import gated_deploy
from shipyard.controller.ssh import abandon, answers, ask_reachable, unreachable
from shipyard.controller.wheelhouse import prepare_pinned_wheels, prepare_wheelhouse
from shipyard.errors import BuilderError, EngineDownError, ShipyardError, UnreachableError
from shipyard import image_packages
from shipyard.image_plan import delivery as image_delivery, versioned_packages, versioned_source_hash
from shipyard.inventory import inventory_path, list_environments, load_environment
from shipyard.lock import environment_lock
from shipyard.render import render_environment
from shipyard.secretstore import finish_rotations, load_or_create, previous_values, put, rotate
from shipyard.settings import EnvironmentSettings, HostSettings, settings_variables

REPO = Path(__file__).resolve().parents[1]
COMPOSE_ROOT = REPO / "compose"


def _render_env(env: str, environ: dict[str, str]) -> dict[Path, bytes]:
    settings = load_environment(REPO, env, environ)
    out: dict[Path, bytes] = {}
    for host_name, rendered in render_environment(settings).items():
        for rel, content in rendered.files.items():
            out[Path(env) / host_name / rel] = content
    return out


def _existing(env: str) -> dict[Path, bytes]:
    base = COMPOSE_ROOT / env
    return {p.relative_to(COMPOSE_ROOT): p.read_bytes() for p in base.rglob("*") if p.is_file()} if base.exists() else {}


def render(envs: list[str], check: bool, environ: dict[str, str]) -> int:
    stale = []
    for env in envs:
        wanted, have = _render_env(env, environ), _existing(env)
        diff = sorted(str(p) for p in set(wanted) | set(have) if wanted.get(p) != have.get(p))
        if check:
            stale += diff
            continue
        if diff:
            shutil.rmtree(COMPOSE_ROOT / env, ignore_errors=True)
            for rel, content in wanted.items():
                (COMPOSE_ROOT / rel).parent.mkdir(parents=True, exist_ok=True)
                (COMPOSE_ROOT / rel).write_bytes(content)
        print(f"compose/{env}: {len(wanted)} files, {len(diff)} changed")
    if stale:
        print("compose/ is stale; these differ from a fresh render:\n  " + "\n  ".join(stale)
              + "\nfix: run `make render` and commit compose/", file=sys.stderr)
        return 1
    return 0


def up(env: str, lock_wait: float, limit: str | None = None) -> int:
    with environment_lock(REPO, env, lock_wait):
        return roll_out_locked(env, limit=limit)


def check_limit(settings: EnvironmentSettings, limit: str | None, rotating: list[str]) -> tuple[HostSettings, ...]:
    """The hosts a deploy with ``limit`` changes (all without one); refuses, before any host is
    touched, a limit that would leave the environment half-changed in a way that breaks it."""
    hosts = settings.limited(limit)
    if hosts == settings.hosts:
        return hosts
    left_out = ", ".join(h.name for h in settings.hosts if h not in hosts)
    if rotating:
        raise ShipyardError(f"LIMIT={limit}", f"a rotation of {', '.join(rotating)} is pending: every host must "
                            f"take the new value before the old one is retired, and {left_out} would not",
                            "deploy without LIMIT once every host answers")
    delivering = image_delivery(settings)
    if delivering is not None:
        # The other hosts pull their images through it (shipyard.apply.image_delivery).
        serving = {i.host.name for i in topology.build(settings).instances_of(delivering[0].name)}
        if not serving & {h.name for h in hosts}:
            raise ShipyardError(f"LIMIT={limit}", f"leaves out {', '.join(sorted(serving))}, which runs "
                                f"{delivering[0].name}: every host gets its images through it",
                                f"add {', '.join(sorted(serving))} to LIMIT")
    return hosts


def roll_out_locked(env: str, data: dict[str, str] | None = None, limit: str | None = None) -> int:
    """The deploy of ``env`` (the caller holds its lock): validate and render, then pyinfra.
    ``data``: extra pyinfra data (a release passes the colour it starts); ``limit``: only these
    hosts (``h1,h3``), the others left as they are (a host that is down)."""
    started = time.monotonic()
    # Validate and render in memory before any host is touched (raises SettingsError); deploy.py
    # renders the same again in the pyinfra process. compose/ is written only by `make render`.
    environ = dict(os.environ)
    settings = load_environment(REPO, env, environ)
    rotating = sorted(previous_values(REPO, env))
    hosts = check_limit(settings, limit, rotating)
    # pyinfra loads meanwhile (~0.8 s of a no-op on `multi`), held at a gate until the checks
    # below pass: it touches no host before (shipyard.apply.pyinfra_gate).
    deploy = gated_deploy.take(REPO)
    try:
        argv = _checked_deploy_argv(env, environ, settings, hosts, data)
    except BaseException:
        deploy.abandon()
        raise
    code = deploy.run(argv)
    took = time.monotonic() - started
    if code != 0:
        print(f"shipyard: rollout of {env} FAILED after {took:.1f}s (see the report above)", file=sys.stderr)
        return code
    if rotating:
        # Every host runs the new values now: the replaced ones are no longer needed.
        finish_rotations(REPO, env, rotating)
        print(f"shipyard: rotated {', '.join(rotating)}: every host runs the new value, the old one is refused")
    print(f"shipyard: rollout of {env} done in {took:.1f}s")
    return 0


def _checked_deploy_argv(env: str, environ: dict[str, str], settings: EnvironmentSettings,
                         hosts: tuple[HostSettings, ...], data: dict[str, str] | None) -> list[str]:
    """pyinfra's argv for the deploy, once everything checked before a host is touched passed
    (raises the first problem: an unreachable host, the builder, a secret, a preflight)."""
    # Every host answers over SSH before anything else asks one (pyinfra would go on without it);
    # the question goes out first and is collected after the render, which takes as long. Its
    # answer is the host's release state, which deploy.py would otherwise read host after host.
    asked = ask_reachable(hosts, commands.cat_if_present(bluegreen.state_file(settings.deploy_root, env)))
    try:
        rendered = _render_env(env, environ)
        # What this machine checks without the hosts' SSH is checked while their handshakes go on
        # (~0.4 s after the render): an error here stops the deploy before an unreachable host
        # would; the preflights' lines wait for the hosts' answers (they may say a server is away).
        # With an image delivery (the registry) this machine builds every image: its engine answers.
        problems = builder.problems(settings) if image_delivery(settings) else []
        if problems:
            raise BuilderError(problems)
        # Secrets too, before any host: a missing one of a real environment stops here with the fix.
        load_or_create(REPO, env, generate_missing=settings.secrets.generate_missing)
        # What the live environment must be for the rollout to succeed (Component.preflight).
        preflights = [(comp.name, comp.preflight(settings, REPO)) for comp in COMPONENTS if comp.preflight]
    except BaseException:
        abandon(asked)
        raise
    problems, release_states = answers(asked)
    if problems:
        raise UnreachableError(problems)
    for name, lines in preflights:
        for line in lines:
            print(f"shipyard: {name}: {line}", flush=True)
    # compose/ holds the render without settings variables: the one above when none is set.
    plain = _render_env(env, {}) if settings_variables(environ) else rendered
    if plain != _existing(env):
        print(f"shipyard: warning: compose/{env} is stale; run `make render` and commit it", file=sys.stderr)
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    # --fail-percent 0: a host that fails (or drops its connection) stops the deploy on every host
    # rather than leaving the others rolled out without it.
    argv = [pyinfra, "-y", "--fail-percent", "0", str(inventory_path(REPO, env)), str(REPO / "deploy.py"),
            "--data", f"shipyard_env={env}"]
    if hosts != settings.hosts:
        # pyinfra's own --limit (by the inventory's host strings); deploy.py learns which carry
        # the deploying machine's steps (the builds, the live setups) from shipyard_limit.
        argv += [part for h in hosts for part in ("--limit", h.connect)]
        argv += ["--data", f"shipyard_limit={','.join(h.name for h in hosts)}"]
    if release_states:
        # deploy.py takes each host's from here (by its inventory name) instead of reading it.
        states = {h.connect: release_states[h.name] for h in hosts if h.name in release_states}
        argv += ["--data", f"shipyard_release_states={json.dumps(states, sort_keys=True)}"]
    for key, value in (data or {}).items():
        argv += ["--data", f"{key}={value}"]
    # Once, here, for every host that builds the task platform's image.
    wheelhouse = prepare_wheelhouse(REPO, settings)
    if wheelhouse:
        argv += ["--data", f"shipyard_wheelhouse={wheelhouse}"]
    pinned_wheels = prepare_pinned_wheels(REPO, settings)
    if pinned_wheels:
        argv += ["--data", f"shipyard_pinned_wheels={pinned_wheels}"]
    return argv


def default_version(settings) -> str:
    """A release's version when VERSION= is not given: the commit of the task platform's
    sources, and a hash of what goes into its image when git does not pin it — its sources or a
    package it installs (the Python client, a kinds package) changed in the checkout since the
    commit, or a kinds package git does not hold (outside the checkout, a wheel it ignores, a
    requirement) — so every change is its own version, and the same content the same one (a
    release of it: nothing to do)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unversioned"
    sources = [image.build_context for comp in COMPONENTS for image in comp.images if image.build_context and image.tag]
    held = True
    for package in versioned_packages(settings):
        path = image_packages.resolve(REPO, package.path or package.wheel) if package.requirement is None else None
        if path is None or not path.resolve().is_relative_to(REPO.resolve()) or not git("ls-files", "--", str(path)):
            held = False
        else:
            sources.append(str(path.resolve().relative_to(REPO.resolve())))
    if not held or git("status", "--porcelain", "--", *sources):
        return f"{commit}-{(versioned_source_hash(REPO, settings) or '')[:8]}"
    return commit


def release(env: str, version: str | None, prebuilt: bool, lock_wait: float) -> int:
    from shipyard.controller import releases as release_steps  # the docker SDK: only when used

    settings = load_environment(REPO, env, dict(os.environ))
    version = bluegreen.check_version(default_version(settings) if version is None else version)
    return release_steps.release_version(settings, version, prebuilt,
                                     lambda data: roll_out_locked(env, data), lock_wait, REPO)


def rollback(env: str, lock_wait: float) -> int:
    from shipyard.controller import releases as release_steps  # the docker SDK: only when used

    settings = load_environment(REPO, env, dict(os.environ))
    return release_steps.rollback(settings, lambda data: roll_out_locked(env, data), lock_wait, REPO)


def releases(env: str) -> int:
    from shipyard.controller import releases as release_steps  # the docker SDK: only when used

    settings = load_environment(REPO, env, dict(os.environ))
    state = release_steps.read_state(settings)
    print(bluegreen.history_table(release_steps.history(settings)))
    idle = state.idle
    warm = f"; {idle} ({state.versions[idle]}) warm" if idle in state.versions and state.warm(time.time()) else ""
    print(f"\nlive: {state.live} ({state.live_version}){warm}")
    return 0


def secrets_rotate(env: str, name: str, lock_wait: float) -> int:
    """A new value for one secret, applied end to end by a deploy (servers first, then the
    containers that read it); interrupted, the next `make up` finishes it."""
    load_environment(REPO, env, dict(os.environ))  # a bad environment stops before the new value exists
    with environment_lock(REPO, env, lock_wait):
        rotate(REPO, env, name)
    print(f"{env}: new {name} in secrets/{env}/ (the old one kept as {name}.previous.age until applied); deploying")
    return up(env, lock_wait)


def down(env: str, volumes: bool) -> int:
    """Every host's project down, the edge's hosts first (users stop reaching it before what it
    needs goes), then the rest."""
    settings = load_environment(REPO, env, dict(os.environ))
    order = sorted(settings.hosts, key=lambda h: "edge" not in h.roles)
    problems = unreachable([h for h in order if h.connect != "@local"])
    if problems:
        raise UnreachableError(problems)
    stopped = teardown.engine_problems(settings, order)
    if stopped:
        raise EngineDownError(stopped)
    codes = [teardown.host_down(settings, host, volumes) for host in order]
    return next((code for code in codes if code), 0)


def validate(env: str) -> int:
    settings = load_environment(REPO, env, dict(os.environ))
    print(f"{env}: valid ({len(settings.hosts)} hosts)")
    return 0


def secrets_init(env: str) -> int:
    load_environment(REPO, env, dict(os.environ))
    created: list[str] = []
    load_or_create(REPO, env, generate_missing=True, created=created)
    print(f"{env}: created {', '.join(created)} in secrets/{env}/ (commit them; the values stay encrypted)"
          if created else f"{env}: every secret exists; nothing created")
    return 0


def secrets_put(env: str, name: str, file: str) -> int:
    """A value the user supplies (Component.supplied_secrets), encrypted into secrets/<env>/; the
    next deploy delivers what derives from it. The value is never printed."""
    # Not load_environment: the settings may name this very secret as missing (a new environment
    # in edge.tls files mode), which is what this command fixes.
    if env not in list_environments(REPO):
        raise ShipyardError(f"ENV={env}", "names no environment", f"one of: {', '.join(list_environments(REPO))}")
    source = Path(file)
    if not source.is_file():
        raise ShipyardError(f"FILE={file}", "is not a file", "give the path of the file that holds the value")
    replaced = put(REPO, env, name, source.read_text())
    print(f"{env}: {'replaced' if replaced else 'put'} {name} in secrets/{env}/{name}.age (commit it; the value "
          f"stays encrypted); `make up ENV={env}` delivers it")
    return 0


def operator_view(command: str, args: argparse.Namespace) -> int:
    """`make status`, `make plan`, `make logs`, `make trace`: read-only (shipyard.controller.views)."""
    from shipyard.controller import views

    settings = load_environment(REPO, args.env, dict(os.environ))
    if command == "logs":
        since = tracing.parse_since(args.since, time.time()) if args.since else None
        minimum = tracing.check_level(args.level) if args.level else None
        return views.logs(settings, args.service, args.tail, args.follow, since, minimum)
    if command == "trace":
        if not args.request_id and not args.task_id:
            raise ShipyardError("make trace", "neither REQUEST_ID nor TASK_ID is set",
                                f"run: make trace ENV={args.env} REQUEST_ID=<X-Request-ID> (or TASK_ID=<task id>)")
        since = tracing.parse_since(args.since, time.time())
        return views.trace(settings, set(args.request_id), set(args.task_id), since, engines_only=args.engines)
    print(views.status(settings) if command == "status" else views.plan_environment(settings, REPO))
    return 0


# --- the commands components bring (Component.commands) -----------------------------------------

def component_commands() -> dict[str, Command]:
    """Every registered component's operator commands by name (a name is one command)."""
    found: dict[str, Command] = {}
    for comp in COMPONENTS:
        for command in comp.commands:
            if command.name in found or command.name in CORE_COMMANDS:
                raise ShipyardError(f"component {comp.name}", f"command {command.name} is defined twice",
                                    "give the command a name of its own (prefix it with the component's)")
            found[command.name] = command
    return found


def make_usage(command: Command, env: str = "name") -> str:
    """``make pg-promote ENV=name REPLICA=postgres-replica-1 [FORCE=1]``."""
    words = [f"make {command.name}", f"ENV={env}"]
    for option in command.options:
        value = "1" if option.flag else (option.example or "..")
        words.append(f"{option.make}={value}" if option.required else f"[{option.make}={value}]")
    return " ".join(words)


def _option_values(command: Command, args: argparse.Namespace, from_make: bool) -> dict[str, object]:
    """The options' values: the CLI's, or through make its variables (REPLICA=, FORCE=1)."""
    values: dict[str, object] = {}
    for option in command.options:
        value = getattr(args, option.name.replace("-", "_"))
        if from_make and value in (None, False):
            raw = os.environ.get(option.make, "")
            value = (raw == "1") if option.flag else (raw or None)
        if value is None and option.required:
            raise ShipyardError(f"make {command.name}", f"{option.make} is not set ({option.help})",
                                f"run: {make_usage(command, args.env)}")
        if value is None:
            value = option.default
        if option.number and value is not None:
            try:
                value = float(value)
            except ValueError:
                raise ShipyardError(f"make {command.name}, {option.make}", f"{value!r} is not a number",
                                    f"run: {make_usage(command, args.env)}") from None
        values[option.name] = value
    return values


def run_component_command(command: Command, args: argparse.Namespace, options: dict[str, object]) -> int:
    settings = load_environment(REPO, args.env, dict(os.environ))

    def secret(name: str) -> str:
        return load_or_create(REPO, args.env, generate_missing=False)[name].value

    ctx = CommandContext(settings, REPO, options, lambda: environment_lock(REPO, args.env, args.lock_wait), secret)
    return command.run(ctx)


def list_commands(make_help: bool) -> int:
    """The registry's commands: names (the docs check), or `make help`'s lines."""
    for command in component_commands().values():
        if make_help:
            print(f"{make_usage(command)}\n{'':25}{command.help}")
        else:
            print(command.name)
    return 0


# --- the audit trail (shipyard.audit) -------------------------------------------------------------

# The core's commands that change an environment's hosts; components mark theirs
# (``Command.changes``). secrets-init only adds files to the checkout, which git records.
CHANGING = frozenset({"up", "down", "secrets-rotate", "release", "rollback"})
# Arguments that say how the tool runs, not what the command does.
_NOT_OPTIONS = frozenset({"command", "env", "from_make", "lock_wait"})


def core_options(args: argparse.Namespace) -> dict[str, object]:
    return {name.replace("_", "-"): value for name, value in vars(args).items() if name not in _NOT_OPTIONS}


def audited(args: argparse.Namespace, changes: bool, options: dict[str, object], sensitive: set[str],
            run: Callable[[], int]) -> int:
    """``run()``, and when the command changes the environment, its event appended on every host
    of it — failed, raised or interrupted runs too. A command refused before the environment's
    settings load touched no host and is not recorded."""
    if not changes:
        return run()
    from shipyard.controller import audit_log  # the docker SDK: only for commands that change

    settings = load_environment(REPO, args.env, dict(os.environ))
    started_at, started = time.time(), time.monotonic()
    code: int | None = None
    error: BaseException | str | None = None
    try:
        code = run()
        return code
    except ShipyardError as exc:
        code, error = 2, exc  # main's exit code for it
        raise
    except KeyboardInterrupt:
        error = "interrupted (Ctrl-C)"
        raise
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        raise
    except Exception as exc:
        code, error = 1, f"{type(exc).__name__}: {exc}"
        raise
    finally:
        user, machine = audit_log.who()
        event = audit.build_event(event_id=uuid.uuid4().hex, env=args.env, command=args.command, options=options,
                                  sensitive=sensitive, user=user, machine=machine,
                                  checkout=audit_log.checkout(REPO), started=started_at,
                                  duration_s=time.monotonic() - started, exit_code=code, error=error)
        # On the hosts it changed (a deploy's LIMIT leaves a host that is down out); reports a
        # host it cannot write, never raises for it.
        try:
            hosts = settings.limited(getattr(args, "limit", None))
        except ShipyardError:  # a LIMIT naming no host of it: refused before touching any
            hosts = ()
        audit_log.record(settings, event, hosts)


def show_audit(env: str, last: int) -> int:
    """`make audit`: the environment's events, merged from its hosts, as a table."""
    from shipyard.controller import audit_log

    events, problems = audit_log.read(load_environment(REPO, env, dict(os.environ)))
    for problem in problems:
        print(f"shipyard: {problem}", file=sys.stderr)
    if not events:
        print(f"{env}: no audit event recorded yet")
        return 0
    print(audit.table(events, last))
    return 0


# --- the parser ------------------------------------------------------------------------------------

# Core commands: (help, arguments beyond --env). The Makefile's own targets call these.
CORE_COMMANDS: dict[str, tuple[str, tuple[tuple[tuple[str, ...], dict], ...]]] = {
    "render": ("render compose/<env>/ (all environments by default)", (
        (("--check",), {"action": "store_true", "help": "fail when compose/ differs from a fresh render"}),)),
    "validate": ("validate an environment's settings and render it in memory", ()),
    "up": ("roll out an environment", (
        (("--limit",), {"help": "only these hosts (shipyard_host names, comma-separated: a host that is down "
                                "left out); the others are left as they are"}),)),
    "down": ("stop an environment (--volumes: delete its data too)", ((("--volumes",), {"action": "store_true"}),)),
    "secrets-init": ("create the missing secrets of an environment, on purpose", ()),
    "secrets-rotate": ("a new value for one secret, applied by a deploy", ((("--name",), {"required": True}),)),
    "secrets-put": ("put a value you supply (your certificate's key) in the store, encrypted", (
        (("--name",), {"required": True}),
        (("--file",), {"required": True, "help": "the file holding the value (read once, left as it is)"}))),
    "status": ("per host and component: instances, image, health, uptime, role, drift", ()),
    "plan": ("what a deploy would change and why (read-only)", ()),
    "logs": ("the logs of a service's (or component's) containers on every host", (
        (("--service",), {"required": True}), (("--tail",), {"type": int, "default": 100}),
        (("--follow",), {"action": "store_true"}),
        (("--since",), {"help": "only lines logged since then: 10m, 2h, an ISO time (UTC) or unix seconds"}),
        (("--level",), {"help": "only JSON lines at or above this level (debug, info, warning, error); "
                                "lines that are not JSON are kept"}))),
    "trace": ("one request or task followed across every container, merged by time, with each hop's latency", (
        (("--request-id",), {"action": "append", "default": [], "help": "a request id (X-Request-ID)"}),
        (("--task-id",), {"action": "append", "default": [], "help": "a task id"}),
        (("--since",), {"default": "24h", "help": "how far back to read the logs (default 24h)"}),
        (("--engines",), {"action": "store_true", "help": "read every container's log on its engine, not the "
                                                          "environment's log store"}))),
    "audit": ("the audit trail: who changed the environment, how, from which commit, with what result", (
        (("--last",), {"type": int, "default": 20, "help": "how many events (default 20)"}),)),
    "release": ("blue-green: the new version in the idle colour, smoke, switch, watch", (
        (("--version",), {"help": "the version (image tag); default: from git"}),
        (("--prebuilt",), {"action": "store_true", "help": "release an image already on the hosts (no build)"}))),
    "rollback": ("back to the previous version (instant when its colour is warm)", ()),
    "releases": ("the release history kept on the host", ()),
    "commands": ("the operator commands the components bring", (
        (("--make-help",), {"action": "store_true", "help": "as `make help` lists them"}),)),
}
_LOCKING = {"up", "secrets-rotate", "release", "rollback"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shipyard")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (text, arguments) in CORE_COMMANDS.items():
        command = sub.add_parser(name, help=text)
        if name == "render":
            command.add_argument("--env", action="append")
        elif name != "commands":
            command.add_argument("--env", required=True)
        if name in _LOCKING:
            command.add_argument("--lock-wait", type=float, default=0.0, help="seconds to wait for another deploy")
        for flags, kwargs in arguments:
            command.add_argument(*flags, **kwargs)
    for name, command in component_commands().items():
        p_command = sub.add_parser(name, help=command.help)
        p_command.add_argument("--env", required=True)
        p_command.add_argument("--lock-wait", type=float, default=0.0, help="seconds to wait for a deploy")
        p_command.add_argument("--from-make", action="store_true", help="options from the make variables")
        for option in command.options:
            kwargs = {"action": "store_true"} if option.flag else {}
            p_command.add_argument(f"--{option.name}", help=option.help, **kwargs)
    return parser


def run_core_command(args: argparse.Namespace) -> int:
    command = args.command
    if command == "render":
        # The committed files are rendered from the inventories alone; overrides are a deploy-time thing.
        environ = {} if args.check or not args.env else dict(os.environ)
        return render(args.env or list_environments(REPO), args.check, environ)
    if command in ("status", "plan", "logs", "trace"):
        return operator_view(command, args)
    handlers = {
        "validate": lambda: validate(args.env),
        "up": lambda: up(args.env, args.lock_wait, args.limit),
        "down": lambda: down(args.env, args.volumes),
        "secrets-init": lambda: secrets_init(args.env),
        "secrets-rotate": lambda: secrets_rotate(args.env, args.name, args.lock_wait),
        "secrets-put": lambda: secrets_put(args.env, args.name, args.file),
        "release": lambda: release(args.env, args.version, args.prebuilt, args.lock_wait),
        "rollback": lambda: rollback(args.env, args.lock_wait),
        "releases": lambda: releases(args.env),
        "commands": lambda: list_commands(args.make_help),
        "audit": lambda: show_audit(args.env, args.last),
    }
    return handlers[command]()


def main(argv: list[str] | None = None) -> int:
    try:
        commands_of_components = component_commands()
        argv = sys.argv[1:] if argv is None else argv
        if "--from-make" in argv and argv[0] not in commands_of_components:
            raise ShipyardError(f"make {argv[0]}", "no such target, and no component brings such a command",
                                "`make help` lists the targets and the components' commands")
        args = build_parser().parse_args(argv)
        component_command = commands_of_components.get(args.command)
        if component_command is not None:
            options = _option_values(component_command, args, args.from_make)
            return audited(args, component_command.changes, options,
                           {o.name for o in component_command.options if o.sensitive},
                           lambda: run_component_command(component_command, args, options))
        return audited(args, args.command in CHANGING, core_options(args), set(), lambda: run_core_command(args))
    except ShipyardError as exc:
        print(f"shipyard: error: {exc}", file=sys.stderr)
        return 2
