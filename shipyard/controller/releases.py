"""Blue-green releases and rollbacks (`make release`, `make rollback`, `make releases`): the
steps, on the environment's hosts (shipyard.bluegreen holds the state and the rules).

A release, each step timed and printed:
  1. lock      the environment's lock (the deploys' own);
  2. start     the deploy with the new version in the idle colour: images, migrations (the
               one-shots run the newest version), the new colour behind its health gate; the
               live colour is left as it is;
  3. smoke     the component's smoke test in the new colour (a real round trip through the
               routing service's preview route, run by the new colour's workers);
  4. switch    the routing file rewritten and the routing service reloaded (nginx: a graceful
               reload, in-flight requests finish on the old workers); then the old colour's
               services that serve no client (workers) stop, finishing or handing back their
               work; its API stays warm for ``release.keep_previous_seconds``;
  5. watch     ``release.watch_seconds`` of the new colour's answers (the routing service's
               access log) against the old colour's just before the switch; beyond the
               thresholds, an automatic rollback to the warm old colour, saying why;
  6. record    a line of history on the host.
A failure before the switch leaves the live colour untouched and removes the new one.

On every host of the environment, local or over SSH (shipyard.controller.hosts): the state is
written on each (each host's deploy reads its own), the history appended on each, the routing
file written on each host of a routing service, which is then reloaded; the containers of each
colour are started, stopped and watched where they run. The state is read from the first host.
"""

from __future__ import annotations

import getpass
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from docker.models.containers import Container

from shipyard import image_plan, bluegreen, topology
from shipyard.errors import ShipyardError
from shipyard.controller.hosts import HostControl, one_per_machine
from shipyard.lock import environment_lock
from shipyard.bluegreen import Record, ReleaseState, Traffic
from shipyard.settings import EnvironmentSettings

LOG_TAIL_LINES = 40
WATCH_POLL_S = 1.0

Deploy = Callable[[dict[str, str]], int]  # extra pyinfra data → exit code (the caller's lock held)


class _Timer:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._at = time.monotonic()

    def done(self, step: str, what: str) -> None:
        now = time.monotonic()
        self.steps[step] = round(now - self._at, 2)
        self._at = now
        print(f"release: {step:<7} {self.steps[step]:6.2f}s  {what}", flush=True)


def _who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


# --- the hosts' files ---------------------------------------------------------------------------

def _dir(settings: EnvironmentSettings) -> str:
    return bluegreen.release_dir(settings.deploy_root, settings.name)


def read_state(settings: EnvironmentSettings) -> ReleaseState:
    try:
        return _access(settings, settings.hosts[0]).release_state()[0]
    except ValueError as exc:
        raise ShipyardError(f"host {settings.hosts[0].name}: {_dir(settings)}/{bluegreen.STATE_FILE}", str(exc),
                            "fix the file, or remove it (a release writes it again)") from None


def _on_every_host(settings: EnvironmentSettings, change: Callable[[HostControl], None]) -> None:
    """``change`` on every host (one per machine), the hosts at once: a release's files are on
    each host, and a switch waits for the slowest SSH round trip only."""
    hosts = one_per_machine(settings.hosts)
    if len(hosts) == 1:
        change(_access(settings, hosts[0]))
        return
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        for done in [pool.submit(change, _access(settings, host)) for host in hosts]:
            done.result()  # the first host's error, once every write ended


def live_instance(settings: EnvironmentSettings, service: str) -> str:
    """The instance of a coloured service users reach now (``api`` → ``api-green``)."""
    return f"{service}-{read_state(settings).live}"


def write_state(settings: EnvironmentSettings, state: ReleaseState) -> None:
    content = state.dump().encode()
    _on_every_host(settings, lambda access: access.replace_file(f"{_dir(settings)}/{bluegreen.STATE_FILE}", content))


def history(settings: EnvironmentSettings) -> list[Record]:
    raw = _access(settings, settings.hosts[0]).read_path(f"{_dir(settings)}/{bluegreen.HISTORY_FILE}")
    return bluegreen.parse_history(raw.decode() if raw is not None else None)


def _record(settings: EnvironmentSettings, record: Record) -> None:
    line = record.line().encode()
    _on_every_host(settings, lambda access: access.append_file(f"{_dir(settings)}/{bluegreen.HISTORY_FILE}", line))


# --- containers ----------------------------------------------------------------------------------

def _coloured(settings: EnvironmentSettings, colour: str) -> list[topology.Instance]:
    return [i for i in topology.build(settings).instances if i.colour == colour]


def _routing(settings: EnvironmentSettings) -> list[topology.Instance]:
    return [i for i in topology.build(settings).instances if i.service.routing_mount and i.component.release_routing]


def _containers(settings: EnvironmentSettings, inst: topology.Instance) -> list[Container]:
    return _access(settings, inst.host).containers_of(inst.name)


_ACCESS: dict[str, HostControl] = {}


def _access(settings: EnvironmentSettings, host) -> HostControl:
    """One Docker client per host for the whole command."""
    if host.name not in _ACCESS:
        _ACCESS[host.name] = HostControl(settings, host)
    return _ACCESS[host.name]


def _healthy(container: Container) -> bool:
    state = container.attrs["State"]
    return state["Status"] == "running" and (state.get("Health") or {}).get("Status", "healthy") == "healthy"


def is_warm(settings: EnvironmentSettings, colour: str) -> bool:
    """Every client-serving instance of ``colour`` runs healthy (users can be sent there now)."""
    serving = [i for i in _coloured(settings, colour) if i.service.serves_clients]
    return bool(serving) and all(any(_healthy(c) for c in _containers(settings, i)) for i in serving)


def _logs(settings: EnvironmentSettings, inst: topology.Instance) -> str:
    return "\n".join(f"--- {c.name}: {c.status}\n" + c.logs(tail=LOG_TAIL_LINES).decode(errors="replace").rstrip()
                     for c in _containers(settings, inst))


def _stop_workers(settings: EnvironmentSettings, colour: str) -> list[str]:
    """Stop the colour's instances that serve no client (workers): SIGTERM, then their grace
    period to finish or hand back what they hold."""
    stopped = []
    for inst in _coloured(settings, colour):
        if not inst.service.serves_clients:
            for container in _containers(settings, inst):
                if container.status == "running":
                    _access(settings, inst.host).stop(container)
                    stopped.append(container.name)
    return stopped


class _Drain:
    """``_stop_workers`` of a colour in the background (each waits out its grace period)."""

    def __init__(self, settings: EnvironmentSettings, colour: str) -> None:
        self.stopped: list[str] = []
        self._thread = threading.Thread(target=lambda: self.stopped.extend(_stop_workers(settings, colour)), daemon=True)
        self._thread.start()

    def join(self) -> list[str]:
        self._thread.join()
        return self.stopped


def _start_workers(settings: EnvironmentSettings, colour: str) -> bool:
    """Start the colour's stopped workers again (an instant rollback); False when a container is gone."""
    complete = True
    for inst in _coloured(settings, colour):
        if not inst.service.serves_clients:
            containers = _containers(settings, inst)
            complete &= bool(containers)
            for container in containers:
                if container.status != "running":
                    _access(settings, inst.host).start(container)
    return complete


def _remove_colour(settings: EnvironmentSettings, colour: str) -> None:
    for inst in _coloured(settings, colour):
        for container in _containers(settings, inst):
            _access(settings, inst.host).remove(container)


def switch(settings: EnvironmentSettings, to: str) -> None:
    """Users to ``to``: on each host of a routing service, the routing file rewritten whole and
    the routing service reloaded."""
    for inst in _routing(settings):
        access = _access(settings, inst.host)
        access.replace_file(f"{_dir(settings)}/{bluegreen.ROUTING_DIR}/{bluegreen.ROUTING_FILE}",
                            inst.component.release_routing(to, bluegreen.other(to)))
        signal = inst.service.reload_signal or "SIGHUP"
        for container in _containers(settings, inst):
            access.signal(container, signal)


def routed_traffic(settings: EnvironmentSettings, colour: str, since: float, until: float | None = None) -> Traffic:
    """What the routing services answered from ``colour`` between two Unix times."""
    log = ""
    for inst in _routing(settings):
        for container in _containers(settings, inst):
            log += container.logs(stdout=True, stderr=False, since=float(since),
                                  until=float(until or time.time())).decode(errors="replace")
    return bluegreen.routed_traffic(log, colour)


# --- the commands --------------------------------------------------------------------------------

def _smoke(settings: EnvironmentSettings, colour: str) -> tuple[bool, str]:
    for comp in {i.component.name: i.component for i in _coloured(settings, colour)}.values():
        if comp.release_smoke is None:
            continue
        service, argv = comp.release_smoke(settings)
        inst = next(i for i in _coloured(settings, colour) if i.service.name == service)
        running = [c for c in _containers(settings, inst) if c.status == "running"]
        if not running:
            return False, f"{inst.name}: no running container"
        code, out, err = _access(settings, inst.host).run(running[0], list(argv))
        if code != 0:
            return False, f"{inst.name}: `{' '.join(argv)}` exited {code}:\n{(out + err).strip()}"
        return True, out.strip().splitlines()[-1] if out.strip() else "ok"
    return True, "no smoke test declared"


def _one_shots_ran(settings: EnvironmentSettings, version: str) -> bool:
    """Every one-shot of a versioned image (migrations) ran to success with ``version``'s image."""
    for inst in topology.build(settings).instances:
        if inst.colour is None and inst.service.one_shot:
            wanted = image_plan.resolved_ref(image_plan.versioned_ref(settings, inst.component, inst.service.image, None),
                                         {bluegreen.version_variable(None): version})
            if not wanted.endswith(f":{version}"):
                continue  # not a versioned image
            for container in _containers(settings, inst):
                container.reload()
                state = container.attrs["State"]
                if container.attrs["Config"]["Image"] != wanted or state["Status"] != "exited" or state["ExitCode"]:
                    return False
    return True


def _fail_before_switch(settings: EnvironmentSettings, before: ReleaseState, colour: str, step: str, why: str,
                        logs: str, record: Record, deploy: Deploy | None = None) -> int:
    """The live colour untouched; the new one removed; the failing container's logs printed.
    ``before``: the state as the release found it. When the new version's one-shots ran, its
    migrations are in: it stays the one-shots' version; when they did not, a deploy puts the
    one-shots back on the old version (``deploy``)."""
    print(f"release: {step} FAILED: {why}", file=sys.stderr)
    if logs:
        print(logs, file=sys.stderr)
    _remove_colour(settings, colour)
    new = read_state(settings).newest
    migrated = new is not None and _one_shots_ran(settings, new)
    write_state(settings, replace(before, starting=None, newest=new if migrated else before.newest))
    if not migrated and deploy is not None:
        print(f"release: the one-shots did not run {new}: a deploy puts them back on {before.newest}", file=sys.stderr)
        deploy({})
    _record(settings, replace(record, result=f"failed: {step}", why=why[:500]))
    print(f"release: users stay on {before.live} ({before.live_version}); the new colour {colour} was removed",
          file=sys.stderr)
    return 1


def _start_and_smoke(settings: EnvironmentSettings, before: ReleaseState, colour: str, version: str,
                     data: dict[str, str], deploy: Deploy, timer: _Timer, record: Record) -> int | None:
    """Steps 2 and 3: the deploy starts ``colour`` behind its health gate, then its smoke test
    through the preview route. A failure leaves the live colour as it is (the exit code); None:
    ready for the switch."""
    def logs() -> str:
        return "\n".join(_logs(settings, i) for i in _coloured(settings, colour))

    if deploy(data) != 0:
        return _fail_before_switch(settings, before, colour, "start", f"the deploy of {colour} failed (above)",
                                   logs(), replace(record, steps=timer.steps), deploy)
    timer.done("start", f"{colour} runs {version}, healthy (live: {before.live} {before.live_version})")
    ok, said = _smoke(settings, colour)
    if not ok:
        return _fail_before_switch(settings, before, colour, "smoke", said, logs(), replace(record, steps=timer.steps))
    timer.done("smoke", said)
    return None


def release_version(settings: EnvironmentSettings, version: str, prebuilt: bool, deploy: Deploy,
                    lock_wait: float, repo: Path) -> int:
    bluegreen.check_version(version)  # it becomes an image tag and a line of .env and state.json
    timer = _Timer()
    with environment_lock(repo, settings.name, lock_wait):
        timer.done("lock", f"environment {settings.name}")
        state = read_state(settings)
        if version == state.live_version:
            print(f"release: {version} is already live in {state.live} on {settings.name}: nothing to do")
            return 0
        started_at = time.time()
        target, old, old_version = state.idle, state.live, state.live_version
        record = Record("release", version, target, old_version, started_at, _who(), "")
        if prebuilt:
            _require_image(settings, version)
        # 2. The new colour: the deploy starts it (and runs the migrations with its image).
        starting = state.starting_release(version)
        write_state(settings, starting)
        data = {"shipyard_release_start": target, **({"shipyard_release_prebuilt": "1"} if prebuilt else {})}
        failed = _start_and_smoke(settings, state, target, version, data, deploy, timer, record)
        if failed is not None:
            return failed
        # 4. Switch; the old colour's workers drain; its API stays warm.
        switched_at = time.time()
        baseline = routed_traffic(settings, old, switched_at - settings.release.baseline_seconds, switched_at)
        live = starting.switched(target, settings.release.keep_previous_seconds, switched_at)
        write_state(settings, live)
        switch(settings, target)
        timer.done("switch", f"users on {target} ({version}); {old} warm until "
                             f"{time.strftime('%H:%M:%S', time.localtime(live.warm_until or 0))}")
        # The old workers drain (their grace period) while the new colour is watched.
        drain = _Drain(settings, old)
        # 5. Watch.
        reason, seen = watch(settings, target, baseline, switched_at)
        if reason:
            print(f"release: ROLLING BACK: {target} ({version}): {reason}", file=sys.stderr)
            print(f"release: the old colour before the switch: {baseline.describe()}; {target} since: {seen.describe()}",
                  file=sys.stderr)
            took = _route_back(settings, live, old)  # users first; the workers after
            drain.join()
            if not _start_workers(settings, old):
                deploy({})
            _remove_colour(settings, target)
            write_state(settings, replace(read_state(settings), warm_until=None,
                                          versions={old: old_version or ""}))
            timer.done("watch", f"rolled back to {old} ({old_version}) in {took:.2f}s; {target} removed")
            _record(settings, replace(record, result="rolled back", steps=timer.steps,
                                      why=f"{reason} ({seen.errors} 5xx of {seen.answers} answers)"))
            return 1
        timer.done("watch", f"{target}: {seen.describe()} (before the switch, {old}: {baseline.describe()})")
        timer.done("drain", f"stopped {', '.join(drain.join()) or 'no worker'} of {old} (during the watch)")
        _record(settings, replace(record, result="done", steps=timer.steps))
        timer.done("record", f"{settings.name}: {version} live in {target}")
        return 0


def _require_image(settings: EnvironmentSettings, version: str) -> None:
    refs = {image_plan.resolved_ref(image_plan.versioned_ref(settings, i.component, i.service.image, i.colour),
                                {bluegreen.version_variable(i.colour): version})
            for i in topology.build(settings).instances if i.colour}
    for host in settings.hosts:
        view = _access(settings, host)
        for ref in refs:
            if view.image_id(ref) is None:
                raise ShipyardError(f"host {host.name}", f"image {ref} is not there (BUILD=0 releases an existing image)",
                                    f"build or load it on the host first, or release without BUILD=0 to build "
                                    f"{version} from this checkout")


def watch(settings: EnvironmentSettings, colour: str, baseline: Traffic, since: float) -> tuple[str | None, Traffic]:
    """Watch ``colour``'s answers for ``release.watch_seconds``: (why to roll back, what it saw)."""
    deadline = since + settings.release.watch_seconds
    judge = bluegreen.Watch(baseline, settings.release)
    while True:
        now = time.time()
        reason = judge.add(routed_traffic(settings, colour, since, now))
        since = now
        if reason or now >= deadline:
            return reason, judge.seen
        time.sleep(min(WATCH_POLL_S, max(0.0, deadline - now)))


def _route_back(settings: EnvironmentSettings, state: ReleaseState, to: str) -> float:
    """Users back on the warm colour ``to`` at once. Seconds the switch took."""
    started = time.monotonic()
    write_state(settings, state.switched(to, settings.release.keep_previous_seconds, time.time()))
    switch(settings, to)
    return time.monotonic() - started


def rollback(settings: EnvironmentSettings, deploy: Deploy, lock_wait: float, repo: Path) -> int:
    """Back to the previous version: instant when its colour is warm, else started first behind
    the same gate and smoke test."""
    timer = _Timer()
    with environment_lock(repo, settings.name, lock_wait):
        timer.done("lock", f"environment {settings.name}")
        state = read_state(settings)
        to, current = state.idle, state.live
        version = state.versions.get(to)
        if not version:
            raise ShipyardError(f"environment {settings.name}", f"no previous version to roll back to (only "
                                f"{state.live_version} in {current} is known)", "release another version first")
        record = Record("rollback", version, to, state.live_version, time.time(), _who(), "")
        if is_warm(settings, to):
            took = _route_back(settings, state, to)
            timer.done("switch", f"users on {to} ({version}) after {took:.2f}s; {current} warm")
            if not _start_workers(settings, to):
                deploy({})  # its workers were removed meanwhile: the deploy of the live colour makes them
            _stop_workers(settings, current)
            timer.done("drain", f"{to}'s workers started, {current}'s stopped")
        else:
            starting = replace(state, starting=to, warm_until=None)
            write_state(settings, starting)
            failed = _start_and_smoke(settings, state, to, version, {"shipyard_release_start": to,
                                                                     "shipyard_release_prebuilt": "1"},
                                      deploy, timer, record)
            if failed is not None:
                return failed
            write_state(settings, starting.switched(to, settings.release.keep_previous_seconds, time.time()))
            switch(settings, to)
            timer.done("switch", f"users on {to} ({version})")
            _stop_workers(settings, current)
        _record(settings, replace(record, result="done", steps=timer.steps))
        timer.done("record", f"{settings.name}: {version} live in {to}")
        return 0
