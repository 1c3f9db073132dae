"""Bring a host's compose project to its desired state, tier by tier, behind health gates.

Runs inside a pyinfra ``python.call`` so it works the same on @local and over SSH: every
command goes through ``shipyard.apply.remote`` as a quoted argv (as root, through sudo when the
inventory says so). Reads state once, asks ``shipyard.plan`` what is out of date, and runs
``docker compose up --wait`` only for those tiers. On a failed gate it prints each failing container's last log lines and health log.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence

from pyinfra import host
from pyinfra.api.exceptions import OperationError

from dataclasses import dataclass

from shipyard import commands
from shipyard.apply import remote
from shipyard.plan import (COMPOSE_CONFIG_HASH_LABEL, COMPOSE_SERVICE_LABEL, DesiredService, ObservedContainer,
                           healthy_services, plan_host, to_restore)

LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class ServiceState:
    """What converging a service needs to know (built by shipyard.apply.rollout)."""

    name: str
    tier: str
    replicas: int
    image: str
    one_shot: bool
    reload_signal: str | None
    depends_on: tuple[str, ...]  # same-host services it starts after


# host name → services recreated by an earlier step of this deploy (the steps of one host run
# in this process, one after the other).
_RECREATED: dict[str, set[str]] = {}
# host name → what the last read of the host's project saw (config hashes, image ids, containers),
# kept for the host's next rollout step while nothing on the host changed since: a no-op deploy
# reads each host once, not once per step (2 round trips and a `compose config` parse each).
# Between the steps only live setups and hand-offs run, which change no container.
_SEEN: dict[str, tuple[dict[str, str], dict[str, str], list[ObservedContainer]]] = {}


def _run(argv: Sequence[str], check: bool = True) -> tuple[bool, str, str]:
    ok, output = remote.run(argv)
    if check and not ok:
        raise OperationError(f"host {host.name}: `{commands.to_shell(argv)}` failed:\n{output.stderr or output.stdout}")
    return ok, output.stdout, output.stderr


def _read_state(project_dir: str, project: str, services: dict[str, ServiceState], refs: Sequence[str] = (),
                reuse: bool = False) -> tuple[list[DesiredService], list[ObservedContainer]]:
    """Config hashes, image ids and the project's containers, read in one parallel round trip
    (``refs``: more images to read the ids of, for the host's later steps). ``reuse``: what the
    host's previous step read, when nothing changed on the host since (``_SEEN``)."""
    seen = _SEEN.get(host.name) if reuse else None
    if seen is None:
        seen = _read_project(project_dir, project, sorted({s.image for s in services.values()} | set(refs)))
        if reuse:
            _SEEN[host.name] = seen
    hashes, ids, observed = seen
    missing = sorted(set(services) - set(hashes))
    if missing:
        raise OperationError(f"host {host.name}: `docker compose config --hash` in {project_dir} names no service "
                             f"{', '.join(missing)}: the shipped compose.yaml is not the render; run the deploy again")
    desired = [DesiredService(s.name, s.tier, s.replicas, hashes[s.name].strip(), ids.get(s.image), s.one_shot)  # type: ignore[arg-type]
               for s in services.values()]
    return desired, observed


def read_ahead(project_dir: str, project: str, refs: Sequence[str]) -> None:
    """pyinfra python.call: the host's project state (``refs``: the images of every service it
    runs) read for the deploy's converges that follow, which take it while nothing on the host
    changed since (``reuse_state``; ``forget_read`` when something did) — unless the project
    files' own read got it already (``remember_read``)."""
    if host.name not in _SEEN:
        _SEEN[host.name] = _read_project(project_dir, project, sorted(set(refs)))
    host.noop(f"{project}'s state read: {len(_SEEN[host.name][2])} containers")


def remember_read(host_name: str, read: tuple[dict[str, str], dict[str, str], list[ObservedContainer]]) -> None:
    """A read of the project (``parse_project_read``) made by another operation in the same round
    trip as its own, valid while nothing changes the host (the project files' operation, when it
    found them as wanted)."""
    _SEEN[host_name] = read


def seen_services(host_name: str) -> set[str] | None:
    """The services with a container (any state) as the host's last read saw them, when nothing
    changed the host since (else None: ask it)."""
    seen = _SEEN.get(host_name)
    return None if seen is None else {c.service for c in seen[2]}


def forget_read(host_name: str) -> None:
    """What changed the host outside a converge (images fetched): its next converge reads it again."""
    _SEEN.pop(host_name, None)


def project_read_command(project_dir: str, project: str, refs: Sequence[str]) -> str:
    """One shell command reading, at once: the services' config hashes, the ids of ``refs``, the
    project's containers (``parse_project_read`` takes its output)."""
    return commands.parallel([commands.compose_config_hashes(project_dir, project),
                              commands.docker_image_ids(sorted(set(refs))),
                              commands.inspect_project_containers(project)])


def parse_project_read(output: str, project_dir: str, project: str
                       ) -> tuple[dict[str, str], dict[str, str], list[ObservedContainer]]:
    """(service → config hash, image ref → id, containers) from ``project_read_command``'s output."""
    (hash_rc, hash_out, hash_err), (_, image_out, _), (ps_rc, ps_out, ps_err) = commands.split_parallel(output, 3)
    if hash_rc != 0 or ps_rc != 0:
        raise OperationError(f"host {host.name}: reading the state of {project} failed "
                             f"(`docker compose config --hash` in {project_dir} / its containers' inspect):\n"
                             f"{hash_err.strip()}\n{ps_err.strip()}")
    hashes = dict(line.split(None, 1) for line in hash_out.splitlines() if line.strip())
    ids: dict[str, str] = {}
    for line in image_out.splitlines():
        tags, _, image_id = line.rpartition(" ")
        if tags.startswith("["):
            for tag in json.loads(tags) or []:
                ids[tag] = image_id
    return hashes, ids, _containers(ps_out)


def _read_project(project_dir: str, project: str, refs: list[str]
                  ) -> tuple[dict[str, str], dict[str, str], list[ObservedContainer]]:
    _, output = remote.run_shell(project_read_command(project_dir, project, refs))
    return parse_project_read(output.stdout, project_dir, project)


def _observed(project: str) -> list[ObservedContainer]:
    _, out, _ = _run(commands.inspect_project_containers(project))
    return _containers(out)


def _containers(inspected: str) -> list[ObservedContainer]:
    """commands.inspect_project_containers' lines."""
    containers = []
    for line in inspected.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        labels = item["Labels"] or {}
        containers.append(ObservedContainer(
            name=item["Name"].lstrip("/"), service=labels.get(COMPOSE_SERVICE_LABEL, ""),
            status=item["Status"], health=item["Health"], exit_code=item["ExitCode"],
            config_hash=labels.get(COMPOSE_CONFIG_HASH_LABEL, ""), image_id=item["Image"]))
    return containers


def _failing(project_dir: str, project: str, services: dict[str, ServiceState]) -> list[ObservedContainer]:
    """Containers of ``services`` that are not well: not running+healthy, or a one-shot that failed."""
    failing = []
    for c in _observed(project):
        if c.service not in services:
            continue
        healthy = (c.status == "running" and c.health in (None, "healthy")) or \
                  (services[c.service].one_shot and c.status == "exited" and c.exit_code == 0)
        if not healthy:
            failing.append(c)
    return failing


def _report_failure(failing: list[ObservedContainer]) -> str:
    """Last log lines and health log of each failing container."""
    lines = []
    for c in failing:
        lines.append(f"--- container {c.name} on host {host.name}: {c.status}"
                     f"{f' ({c.health})' if c.health else ''}, exit code {c.exit_code}")
        _, out, err = _run(commands.docker_logs_tail(c.name, LOG_TAIL_LINES), check=False)
        lines.append(f"last {LOG_TAIL_LINES} log lines:\n{(out + chr(10) + err).strip()}")
        _, out, _ = _run(commands.docker_inspect([c.name]), check=False)
        try:
            health_log = (json.loads(out)[0]["State"].get("Health") or {}).get("Log") or []
        except (ValueError, IndexError, KeyError):
            health_log = []
        if not health_log:
            lines.append("health log: empty (the container stopped before its first health probe)")
        for probe in health_log[-3:]:
            lines.append(f"health probe exit {probe.get('ExitCode')}: {str(probe.get('Output', '')).strip()[:400]}")
    return "\n".join(lines) or "(no failing container found; see `docker compose ps -a`)"


_PROGRESS = re.compile(r"^\s*(Container|Network|Volume) \S+\s+(Creat|Recreat|Start|Stopp|Running|Waiting|Healthy|"
                       r"Removed|Removing)\w*$")


def _compose_errors(stderr: str) -> str:
    """What compose said, without its per-container progress lines."""
    return "\n".join(line for line in stderr.strip().splitlines() if not _PROGRESS.match(line))


def _restore(last_good_dir: str, project: str, services: list[str], timeout: int) -> str:
    """Bring ``services`` back as the last deploy that finished well left them (its copy of the
    project, shipyard.apply.rollout.last_good_command); what to print about it."""
    if not services:
        return ""
    ok, _, _ = _run(["test", "-f", f"{last_good_dir}/compose.yaml"], check=False)
    if not ok:
        return f"not restored: {', '.join(services)} (no earlier deploy finished well on this host)"
    # --no-deps: only these; what they depend on is either healthy or being restored with them.
    argv = commands.compose(last_good_dir, project, "up", "-d", "--wait", "--wait-timeout", str(timeout),
                            "--no-deps", *services)
    ok, _, err = _run(argv, check=False)
    if ok:
        return (f"restored {', '.join(services)} to the configuration of the last deploy that finished well: "
                f"healthy again (the next deploy replaces them)")
    return f"restoring {', '.join(services)} failed too:\n{_compose_errors(err)}"


def one_shots_alone(wanted: list[str], services: dict[str, ServiceState]) -> list[str]:
    """The one-shots of ``wanted`` that no long-running service started with them waits for,
    directly or through another one-shot (api ← migrate ← db-setup: compose gates those itself),
    in the order to run them. A waiting service that is up to date is not started: `up --wait`
    would see the one-shot exit and fail."""
    waited_for: set[str] = set()
    queue = [dep for name in wanted if not services[name].one_shot for dep in services[name].depends_on]
    while queue:
        dep = queue.pop()
        if dep not in waited_for:
            waited_for.add(dep)
            queue += list(services[dep].depends_on) if dep in services else []
    return _dependencies_first([n for n in wanted if services[n].one_shot and n not in waited_for], services)


def _dependencies_first(names: list[str], services: dict[str, ServiceState]) -> list[str]:
    """``names`` ordered so that each comes after those of them it depends on (migrate after
    db-setup when a step holds both and nothing long-running waits for them)."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for dep in services[name].depends_on:
            if dep in names:
                visit(dep)
        ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def _up_and_wait(project_dir: str, project: str, wanted: list[str], services: dict[str, ServiceState],
                 timeout: int) -> tuple[bool, str]:
    """``up --wait`` of ``wanted``; then each one-shot nothing here waits for (a job run against
    what the step started), alone: compose's --wait takes such a container's exit, even 0, for
    a failure. (A one-shot others wait for is gated by their ``service_completed_successfully``.)"""
    last = one_shots_alone(wanted, services)
    gated = [name for name in wanted if name not in last]
    if gated:
        ok, _, err = _run(commands.compose_up_wait(project_dir, project, gated, timeout), check=False)
        if not ok:
            return False, err
    for name in last:
        ok, _, err = _run(commands.compose_up_detached(project_dir, project, [name]), check=False)
        if not ok:
            return False, err
        ok, out, err = _run(commands.docker_wait(f"{project}-{name}-1", timeout), check=False)
        if not ok or out.strip() != "0":
            return False, err or f"{name} exited with {out.strip() or 'no code'}"
    return True, ""


def converge_host(project_dir: str, project: str, services: dict[str, ServiceState], timeouts: dict[str, int],
                  last_good_dir: str = "", later_images: Sequence[str] = (), reuse_state: bool = False) -> None:
    """Converge ``services`` (this rollout step's share of the host) behind health gates. When
    the gate fails, services that were healthy before are restored from ``last_good_dir``.
    ``reuse_state``: one of a deploy's rollout steps, which may take what the host's previous
    step read if that changed nothing (``later_images``: the images of the host's later steps,
    read with this one's)."""
    recreated = _RECREATED.setdefault(host.name, set())
    if not services:
        host.noop("nothing of this host in this step")
        return
    desired, observed = _read_state(project_dir, project, services, later_images, reuse_state)
    plans = plan_host(desired, observed)
    stale = [plan for plan in plans if not plan.up_to_date]
    for plan in plans:
        if plan.up_to_date:
            host.noop(f"tier {plan.tier}: {', '.join(plan.services)} up to date")
        else:  # reason first: what drifted or changed, before anything is touched
            print(f"[{host.name}] tier {plan.tier}: {'; '.join(plan.reasons)}", flush=True)
    changed_tiers = [plan.tier for plan in stale]
    if stale:
        # One dependency-gated `up --wait` over every stale tier of the step: compose starts each
        # service only once what it depends on (earlier tiers: data before app before edge) is
        # healthy, so later tiers never run ahead of their dependencies, but independent work
        # overlaps (a replica cloning does not hold back the API).
        wanted = [name for plan in stale for name in plan.services]
        healthy_before = healthy_services([c for c in observed if c.service in wanted
                                           and not services[c.service].one_shot])
        timeout = sum(timeouts[plan.tier] for plan in stale)
        started = time.monotonic()
        ok, err = _up_and_wait(project_dir, project, wanted, services, timeout)
        took = time.monotonic() - started
        if not ok:
            failing = _failing(project_dir, project, services)
            tier = next((plan.tier for plan in stale if set(plan.services) & {c.service for c in failing}),
                        stale[0].tier)
            headline = f"host {host.name}: tier {tier} did not become healthy within {timeout}s"
            report = _report_failure(failing)  # before a restore replaces the failing containers
            restored = _restore(last_good_dir, project, to_restore(healthy_before, failing), timeout) \
                if last_good_dir else ""
            # Printed here, once: pyinfra repeats an exception's whole text (traceback and repr).
            print(f"{headline}.\n{_compose_errors(err)}\n{report}\n{restored + chr(10) if restored else ''}"
                  f"fix: correct the failing container's problem above, then run the deploy again", flush=True)
            raise OperationError(f"{headline} (report above)")
        recreated.update(wanted)
        _SEEN.pop(host.name, None)
        print(f"[{host.name}] tiers {', '.join(changed_tiers)}: healthy after {took:.1f}s", flush=True)
    stale_names = {name for plan in stale for name in plan.services}
    for state in services.values():
        if state.reload_signal and state.name not in stale_names and recreated & set(state.depends_on):
            # It resolves what it depends on at (re)load: recreated containers have new addresses.
            _run(commands.compose_kill_signal(project_dir, project, state.name, state.reload_signal))
            _SEEN.pop(host.name, None)
    if changed_tiers:
        print(f"[{host.name}] changed tiers: {', '.join(changed_tiers)}", flush=True)
    else:
        print(f"[{host.name}] nothing changed: {len(desired)} services up to date", flush=True)
