"""The command line behind the Makefile: validate → render → (lock) → pyinfra → report.

    python -m shipyard render [--env E ...] [--check]
    python -m shipyard validate --env E
    python -m shipyard up --env E [--lock-wait S]
    python -m shipyard down --env E [--volumes]
    python -m shipyard secrets-init --env E
    python -m shipyard secrets-rotate --env E --name NAME [--lock-wait S]
    python -m shipyard status --env E | plan --env E | logs --env E --service S [--tail N] [--follow]
    python -m shipyard config-push --env E | config-set --env E --key K --value V
    python -m shipyard config-history --env E | config-rollback --env E --to VERSION
    python -m shipyard release --env E [--version V] [--prebuilt] | rollback --env E | releases --env E
    python -m shipyard redis-failover --env E
    python -m shipyard pg-backup --env E
    python -m shipyard pg-restore --env E [--backup /backups/base-<time>] [--until TIME]
    python -m shipyard pg-promote --env E --replica postgres-replica-N [--force]
    python -m shipyard pg-rebuild --env E --node NODE
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from shipyard import commands
from shipyard import release as release_model
from shipyard.apply import releasing
from shipyard.apply.wheelhouse import prepare_wheelhouse
from shipyard.components import COMPONENTS
from shipyard.images import hash_tree
from shipyard.errors import ShipyardError
from shipyard.inventory import inventory_path, list_environments, load_environment
from shipyard.lock import environment_lock
from shipyard.render import render_environment
from shipyard.secretstore import finish_rotations, load_or_create, previous_values, rotate

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


def up(env: str, lock_wait: float) -> int:
    with environment_lock(REPO, env, lock_wait):
        return roll_out_locked(env)


def roll_out_locked(env: str, data: dict[str, str] | None = None) -> int:
    """The deploy of ``env`` (the caller holds its lock): validate and render, then pyinfra.
    ``data``: extra pyinfra data (a release passes the colour it starts)."""
    started = time.monotonic()
    # Validate and render in memory before any host is touched (raises SettingsError); deploy.py
    # renders the same again in the pyinfra process. compose/ is written only by `make render`.
    _render_env(env, dict(os.environ))
    settings = load_environment(REPO, env, dict(os.environ))
    # Secrets too, before any host: a missing one of a real environment stops here with the fix.
    load_or_create(REPO, env, generate_missing=settings.secrets.generate_missing)
    rotating = sorted(previous_values(REPO, env))
    if _render_env(env, {}) != _existing(env):
        print(f"shipyard: warning: compose/{env} is stale; run `make render` and commit it", file=sys.stderr)
    pyinfra = str(Path(sys.executable).with_name("pyinfra"))
    argv = [pyinfra, "-y", str(inventory_path(REPO, env)), str(REPO / "deploy.py"),
            "--data", f"shipyard_env={env}"]
    for key, value in (data or {}).items():
        argv += ["--data", f"{key}={value}"]
    # Once, here, for every host that builds the task platform's image.
    wheelhouse = prepare_wheelhouse(REPO)
    if wheelhouse:
        argv += ["--data", f"shipyard_wheelhouse={wheelhouse}"]
    result = subprocess.run(argv, cwd=REPO, check=False)
    took = time.monotonic() - started
    if result.returncode != 0:
        print(f"shipyard: rollout of {env} FAILED after {took:.1f}s (see the report above)", file=sys.stderr)
        return result.returncode
    if rotating:
        # Every host runs the new values now: the replaced ones are no longer needed.
        finish_rotations(REPO, env, rotating)
        print(f"shipyard: rotated {', '.join(rotating)}: every host runs the new value, the old one is refused")
    print(f"shipyard: rollout of {env} done in {took:.1f}s")
    return 0


def default_version() -> str:
    """A release's version when VERSION= is not given: the commit of the task platform's
    sources, and a hash of them when they differ from it (every change its own version)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unversioned"
    sources = [image.build_context for comp in COMPONENTS for image in comp.images if image.build_context and image.tag]
    if git("status", "--porcelain", "--", *sources):
        return f"{commit}-{hash_tree(REPO / sources[0])[:8]}"
    return commit


def release(env: str, version: str | None, prebuilt: bool, lock_wait: float) -> int:
    version = release_model.check_version(default_version() if version is None else version)
    settings = load_environment(REPO, env, dict(os.environ))
    return releasing.release_version(settings, version, prebuilt,
                                     lambda data: roll_out_locked(env, data), lock_wait, REPO)


def rollback(env: str, lock_wait: float) -> int:
    settings = load_environment(REPO, env, dict(os.environ))
    return releasing.rollback(settings, lambda data: roll_out_locked(env, data), lock_wait, REPO)


def releases(env: str) -> int:
    settings = load_environment(REPO, env, dict(os.environ))
    state = releasing.read_state(settings)
    print(release_model.history_table(releasing.history(settings)))
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
    settings = load_environment(REPO, env, dict(os.environ))
    local = [h for h in settings.hosts if h.connect == "@local"]
    if not local:
        raise ShipyardError(f"environment {env}", "`down` only handles @local hosts for now",
                            "run `docker compose down` on each host")
    project_dir = commands.project_dir(settings.deploy_root, env)
    if not Path(project_dir, "compose.yaml").exists():
        print(f"{env}: nothing deployed at {project_dir}")
        return 0
    code = subprocess.run(commands.compose_down(project_dir, settings.compose_project, volumes), check=False).returncode
    if code == 0 and volumes:
        # A full teardown: the shipped project and its secret files go too; the next deploy
        # starts from nothing (the age-encrypted secrets in secrets/<env>/ stay).
        shutil.rmtree(project_dir)
        shutil.rmtree(commands.last_good_dir(settings.deploy_root, env), ignore_errors=True)
        # And its release state and history (without VOLUMES they stay: `make up` brings the live
        # colour back at its version).
        shutil.rmtree(release_model.release_dir(settings.deploy_root, env), ignore_errors=True)
        print(f"{env}: removed {project_dir}")
    return code


def pg_promote(env: str, replica: str, lock_wait: float, force: bool) -> int:
    from shipyard.components.postgres.promote import check_node, pg_promote as promote

    settings = load_environment(REPO, env, dict(os.environ))
    check_node(settings, replica)
    # Under the deploy lock: a rollout meanwhile would start the stopped old primary.
    with environment_lock(REPO, env, lock_wait):
        done = promote(settings, replica, force=force)
    without = f" ({done.writes_unavailable_s:.2f}s without a primary)" if done.writes_unavailable_s is not None else ""
    print(f"{env}: PostgreSQL primary {done.old_primary} -> {done.new_primary}; writes accepted "
          f"{done.promote_s:.2f}s after the promote{without}; {done.old_primary} rebuilt as a replica in "
          f"{done.rebuild_s:.1f}s")
    return 0


def pg_rebuild(env: str, node: str, lock_wait: float) -> int:
    from shipyard.components.postgres.promote import check_node, pg_rebuild as rebuild

    settings = load_environment(REPO, env, dict(os.environ))
    check_node(settings, node)
    with environment_lock(REPO, env, lock_wait):
        took = rebuild(settings, node)
    print(f"{env}: {node} cloned again from the primary and streaming after {took:.1f}s")
    return 0


def runtime_config(command: str, env: str, key: str | None, value: str | None, to: str | None, timeout: float) -> int:
    """The task platform's runtime config in Consul (shipyard.components.taskplatform.runtime)."""
    import json

    from shipyard.components.taskplatform import runtime

    settings = load_environment(REPO, env, dict(os.environ))
    token = load_or_create(REPO, env, generate_missing=False)["consul_management_token"].value
    if command == "config-history":
        for entry in runtime.history(settings, token):
            doc = entry["document"]
            print(f"version {doc['version']:>4}  {entry['at']}  {entry['by']}  {entry['note']}")
        return 0
    if command == "config-push":
        print(runtime.push(settings, token, runtime.desired(settings), "pushed from the repo", timeout))
        return 0
    doc = runtime.current_document(settings, token)
    if command == "config-set":
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value  # a bare word is a string
        print(runtime.push(settings, token, {**doc, key: parsed}, f"set {key}", timeout))
        return 0
    print(runtime.push(settings, token, runtime.version_from_history(settings, token, to), f"rollback to version {to}",
                       timeout))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shipyard")
    sub = parser.add_subparsers(dest="command", required=True)
    p_render = sub.add_parser("render", help="render compose/<env>/ (all environments by default)")
    p_render.add_argument("--env", action="append")
    p_render.add_argument("--check", action="store_true", help="fail when compose/ differs from a fresh render")
    p_validate = sub.add_parser("validate")
    p_validate.add_argument("--env", required=True)
    p_up = sub.add_parser("up", help="roll out an environment")
    p_up.add_argument("--env", required=True)
    p_up.add_argument("--lock-wait", type=float, default=0.0, help="seconds to wait for another deploy")
    p_failover = sub.add_parser("redis-failover", help="SENTINEL FAILOVER and wait for the new master")
    p_failover.add_argument("--env", required=True)
    sub.add_parser("pg-backup", help="a PostgreSQL base backup now").add_argument("--env", required=True)
    p_restore = sub.add_parser("pg-restore", help="start a fresh PostgreSQL from a base backup")
    p_restore.add_argument("--env", required=True)
    p_restore.add_argument("--backup", help="/backups/base-<time> (default: the newest)")
    p_restore.add_argument("--until", help="replay the WAL archive up to this time (default: all of it)")
    p_promote = sub.add_parser("pg-promote", help="make a PostgreSQL replica the primary (no commit lost)")
    p_promote.add_argument("--env", required=True)
    p_promote.add_argument("--replica", required=True, help="the node to promote, e.g. postgres-replica-1")
    p_promote.add_argument("--lock-wait", type=float, default=0.0)
    p_promote.add_argument("--force", action="store_true",
                           help="promote although no primary answers (commits it had not sent are lost)")
    p_rebuild = sub.add_parser("pg-rebuild", help="wipe a PostgreSQL replica and clone it again from the primary")
    p_rebuild.add_argument("--env", required=True)
    p_rebuild.add_argument("--node", required=True)
    p_rebuild.add_argument("--lock-wait", type=float, default=0.0)
    sub.add_parser("secrets-init", help="create the missing secrets of an environment, on purpose"
                   ).add_argument("--env", required=True)
    p_rotate = sub.add_parser("secrets-rotate", help="a new value for one secret, applied by a deploy")
    p_rotate.add_argument("--env", required=True)
    p_rotate.add_argument("--name", required=True)
    p_rotate.add_argument("--lock-wait", type=float, default=0.0)
    for name, text in (("config-push", "write the repo's runtime config to Consul, wait until every process runs it"),
                       ("config-set", "change one runtime config key in Consul, wait until every process runs it"),
                       ("config-history", "the runtime config versions pushed to Consul"),
                       ("config-rollback", "push an earlier runtime config version again")):
        p_config = sub.add_parser(name, help=text)
        p_config.add_argument("--env", required=True)
        p_config.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for every process")
        if name == "config-set":
            p_config.add_argument("--key", required=True)
            p_config.add_argument("--value", required=True, help="JSON (8, true, \"x\") or a bare string")
        if name == "config-rollback":
            p_config.add_argument("--to", required=True, help="a version from config-history")
    sub.add_parser("status", help="per host and component: instances, image, health, uptime, role, drift"
                   ).add_argument("--env", required=True)
    sub.add_parser("plan", help="what a deploy would change and why (read-only)").add_argument("--env", required=True)
    p_logs = sub.add_parser("logs", help="the logs of a service's (or component's) containers on every host")
    p_logs.add_argument("--env", required=True)
    p_logs.add_argument("--service", required=True)
    p_logs.add_argument("--tail", type=int, default=100)
    p_logs.add_argument("--follow", action="store_true")
    p_release = sub.add_parser("release", help="blue-green: the new version in the idle colour, smoke, switch, watch")
    p_release.add_argument("--env", required=True)
    p_release.add_argument("--version", help="the version (image tag); default: from git")
    p_release.add_argument("--prebuilt", action="store_true", help="release an image already on the hosts (no build)")
    p_release.add_argument("--lock-wait", type=float, default=0.0)
    p_rollback = sub.add_parser("rollback", help="back to the previous version (instant when its colour is warm)")
    p_rollback.add_argument("--env", required=True)
    p_rollback.add_argument("--lock-wait", type=float, default=0.0)
    sub.add_parser("releases", help="the release history kept on the host").add_argument("--env", required=True)
    p_down = sub.add_parser("down")
    p_down.add_argument("--env", required=True)
    p_down.add_argument("--volumes", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "render":
            # The committed files are rendered from the inventories alone; overrides are a deploy-time thing.
            environ = {} if args.check or not args.env else dict(os.environ)
            return render(args.env or list_environments(REPO), args.check, environ)
        if args.command == "validate":
            settings = load_environment(REPO, args.env, dict(os.environ))
            print(f"{args.env}: valid ({len(settings.hosts)} hosts)")
            return 0
        if args.command == "secrets-init":
            load_environment(REPO, args.env, dict(os.environ))
            created: list[str] = []
            load_or_create(REPO, args.env, generate_missing=True, created=created)
            print(f"{args.env}: created {', '.join(created)} in secrets/{args.env}/ (commit them; the values stay "
                  f"encrypted)" if created else f"{args.env}: every secret exists; nothing created")
            return 0
        if args.command.startswith("config-"):
            return runtime_config(args.command, args.env, getattr(args, "key", None), getattr(args, "value", None),
                                  getattr(args, "to", None), args.timeout)
        if args.command == "secrets-rotate":
            return secrets_rotate(args.env, args.name, args.lock_wait)
        if args.command in ("status", "plan", "logs"):
            from shipyard import views

            settings = load_environment(REPO, args.env, dict(os.environ))
            if args.command == "logs":
                return views.logs(settings, args.service, args.tail, args.follow)
            print(views.status(settings) if args.command == "status" else views.plan_environment(settings, REPO))
            return 0
        if args.command == "up":
            return up(args.env, args.lock_wait)
        if args.command == "down":
            return down(args.env, args.volumes)
        if args.command == "release":
            return release(args.env, args.version, args.prebuilt, args.lock_wait)
        if args.command == "rollback":
            return rollback(args.env, args.lock_wait)
        if args.command == "releases":
            return releases(args.env)
        if args.command == "pg-promote":
            return pg_promote(args.env, args.replica, args.lock_wait, args.force)
        if args.command == "pg-rebuild":
            return pg_rebuild(args.env, args.node, args.lock_wait)
        if args.command == "pg-backup":
            from shipyard.components.postgres.backups import pg_backup

            print(pg_backup(load_environment(REPO, args.env, dict(os.environ))))
            return 0
        if args.command == "pg-restore":
            from shipyard.components.postgres.backups import pg_restore, restore_container

            settings = load_environment(REPO, args.env, dict(os.environ))
            backup, rows = pg_restore(settings, args.backup, args.until)
            print(f"{args.env}: restored {backup} into container {restore_container(settings)}: tasks has {rows} rows "
                  f"(remove it with: docker rm -f -v {restore_container(settings)})")
            return 0
        if args.command == "redis-failover":
            from shipyard.components.redis.failover import redis_failover

            old, new, took = redis_failover(load_environment(REPO, args.env, dict(os.environ)))
            print(f"{args.env}: Redis master {old} -> {new}; all Sentinels agree after {took:.2f}s")
            return 0
    except ShipyardError as exc:
        print(f"shipyard: error: {exc}", file=sys.stderr)
        return 2
    return 1
