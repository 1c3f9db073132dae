"""The operator's views: `make status` (what runs, how healthy, in which role, drifted or
not), `make plan` (what a deploy would change, and why) and `make logs`. Read-only: they go
through shipyard.controller.hosts and never change a host."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
from concurrent.futures import ThreadPoolExecutor
import json
import time
from pathlib import Path

import docker.errors
import requests
import yaml

from shipyard import hostsysctl, image_plan, plan, rollout_order, topology, tracing
from shipyard.image_plan import ObservedImage, plan_image_builds
from shipyard.components import COMPONENTS
from shipyard.controller.hosts import COMPOSE_SERVICE_LABEL, HostView, exec_in, health, uptime
from shipyard.errors import ShipyardError
from shipyard.render import COMPOSE_FILE, RenderedHost, render_host
from shipyard.render.compose import secrets_env, secrets_variable
from shipyard.secretstore import fingerprints, load_or_create
from shipyard.settings import EnvironmentSettings


def _deployed_compose(access: HostView) -> dict | None:
    raw = access.read_file(COMPOSE_FILE)
    return yaml.safe_load(raw) if raw else None


def _drift(access: HostView, rendered: RenderedHost) -> list[str]:
    changes = plan.service_changes(_deployed_compose(access), rendered.compose)
    out = [f"{name}: {'; '.join(reasons)}" for name, reasons in changes.items() if reasons]
    wanted = {p: hashlib.sha256(c).hexdigest() for p, c in rendered.shipped.items() if p != COMPOSE_FILE}
    deployed = access.file_digests(list(wanted))
    out += plan.file_changes(deployed, wanted)
    return out


def described(comp, settings: EnvironmentSettings, running: dict) -> tuple[dict[str, str], str | None]:
    """(the component's text per container, why it has none). Its describe asks the containers
    (an exec, an API call); one that stopped, restarted or went since it was listed, or an engine
    that refused, leaves this component's lines without roles and says so: the view is most
    needed when something is wrong, so one failed question never ends it."""
    if comp.describe is None:
        return {}, None
    try:
        return comp.describe(settings, running), None
    except (docker.errors.DockerException, requests.RequestException) as exc:
        return {}, f"(no answer from {comp.name}'s containers: {type(exc).__name__}: {exc}; `make status` again)"


def status(settings: EnvironmentSettings) -> str:
    lines = [f"status of {settings.name} ({len(settings.hosts)} host{'s' if len(settings.hosts) > 1 else ''})"]
    # Each host asked at once (over SSH each is a few round trips), printed in the inventory's order.
    with ThreadPoolExecutor(max_workers=max(1, len(settings.hosts))) as pool:
        for host_lines in pool.map(lambda host: _host_status(settings, host), settings.hosts):
            lines += host_lines
    return "\n".join(lines)


def _host_status(settings: EnvironmentSettings, host) -> list[str]:
    access = HostView(settings, host)
    rendered = render_host(settings, host)
    on_host = topology.build(settings).instances_on(host)
    lines = [f"host {host.name} ({host.address})" + ("" if on_host else ": runs nothing")]
    if not on_host:
        return lines
    containers = access.containers()
    state, _ = access.release_state()
    by_service: dict[str, list] = {}
    for c in containers:
        by_service.setdefault(c.labels.get(COMPOSE_SERVICE_LABEL, ""), []).append(c)
    for comp in COMPONENTS:
        mine = [i for i in on_host if i.component is comp]
        if not mine:
            continue
        lines.append(f"  {comp.name}")
        running = {i.name: by_service[i.name][0] for i in mine if by_service.get(i.name)}
        roles, unanswered = described(comp, settings, running)
        if unanswered:
            lines.append(f"    {unanswered}")
        for inst in mine:
            found = by_service.get(inst.name, [])
            if inst.colour is not None and inst.colour != state.live:
                what = "warm (the previous release)" if state.warm(time.time()) else "idle"
                lines.append(f"    {inst.name:<22} {what}: users are on {state.live} ({state.live_version})")
                if not found:
                    continue
            elif not found:
                lines.append(f"    {inst.name:<22} not deployed")
                continue
            for c in found:
                image = c.attrs["Config"]["Image"]
                # A text may describe one container (by its name) and run over several lines.
                first, *more = roles.get(c.name, roles.get(inst.name, "")).split("\n")
                lines.append(f"    {c.name if len(found) > 1 else inst.name:<22} {image:<30} "
                             f"{health(c):<18} up {uptime(c):<7} {first}".rstrip())
                lines += [f"      {line}" for line in more if line]
    drift = _drift(access, rendered)
    lines.append("  drift from the render: " + ("none" if not drift else f"{len(drift)} (see `make plan ENV={settings.name}`)"))
    for item in drift[:10]:
        lines.append(f"    {item}")
    return lines


def _image_plan(access: HostView, repo: Path) -> list[str]:
    needed = [(i.component, i.service.image) for i in topology.build(access.settings).instances_on(access.host)]
    state, released = access.release_state()
    builds = image_plan.build_plan(repo, access.settings, needed, state.live_version, released)
    observed = {}
    for build in builds:
        for ref in filter(None, (build.ref, build.build_args.get("BASE_IMAGE"))):
            try:
                image = access.docker.images.get(ref)
            except docker.errors.ImageNotFound:
                continue
            for tag in image.tags:
                observed[tag] = ObservedImage(id=image.id, labels=image.labels or {})
    out = [f"build {item.build.ref}: {item.reason}" for item in plan_image_builds(builds, observed)]
    for ref in image_plan.images_to_pull(access.settings, needed):
        if access.image_id(ref) is None:
            out.append(f"pull {ref}: not on the host")
    return out


def _runtime_reasons(access: HostView, rendered: RenderedHost) -> dict[str, list[str]]:
    """Why a service would be (re)started although its definition did not change."""
    by_service: dict[str, list] = {}
    for c in access.containers():
        by_service.setdefault(c.labels.get(COMPOSE_SERVICE_LABEL, ""), []).append(c)
    out: dict[str, list[str]] = {}
    released, _ = access.release_state()
    now = time.time()
    for inst in topology.build(access.settings).instances_on(access.host):
        found = by_service.get(inst.name, [])
        if inst.colour is not None and inst.colour not in released.colours_to_run():
            if found and inst.colour in released.colours_to_remove(now):
                out[inst.name] = ["the idle colour, no longer kept warm: removed"]
            continue
        want = inst.service.scale(access.settings) if inst.service.scale else 1
        reasons = []
        if len(found) != want:
            reasons.append(f"{len(found)} container(s), want {want}")
        for c in found:
            state = health(c)
            if inst.service.one_shot:
                if not state.startswith("exited (exit 0)"):
                    reasons.append(f"{c.name}: one-shot is {state}")
            elif state not in ("healthy", "running"):
                reasons.append(f"{c.name}: {state}")
        out[inst.name] = reasons
    return out


def _container_reasons(access: HostView, on_host, printed: dict[str, str] | None) -> dict[str, list[str]]:
    """Why containers whose definition did not change would still be recreated: a secret they
    read at start changed (the project's .env), or they were not made from the deployed
    definition (changed outside the deploy)."""
    out: dict[str, list[str]] = {}
    if printed is not None:
        variables = {inst.name: secrets_variable(inst.name) for inst in on_host}
        have = access.read_file(".env")
        out = plan.env_changes(have.decode() if have else None, secrets_env(on_host, printed).decode(), variables)
    hashes = access.compose_config_hashes()
    if hashes:
        found: dict[str, list[tuple[str, str]]] = {}
        for c in access.containers():
            found.setdefault(c.labels.get(COMPOSE_SERVICE_LABEL, ""), []).append(
                (c.name, c.labels.get(plan.COMPOSE_CONFIG_HASH_LABEL, "")))
        for name, reasons in plan.drifted(found, plan.parse_config_hashes(hashes)).items():
            out.setdefault(name, []).extend(reasons)
    return out


def _secret_fingerprints(settings: EnvironmentSettings, repo: Path) -> tuple[dict[str, str] | None, str | None]:
    """The checkout's secrets by fingerprint (what a deploy would give the hosts), or why not."""
    try:
        return fingerprints(load_or_create(repo, settings.name, generate_missing=False)), None
    except ShipyardError as err:
        return None, f"secrets: not compared ({err.what})"


def plan_environment(settings: EnvironmentSettings, repo: Path) -> str:
    lines = [f"plan for {settings.name}: what `make deploy ENV={settings.name}` would change (read-only; nothing was changed)"]
    total = 0
    printed, unread = _secret_fingerprints(settings, repo)
    if unread:
        lines.append(unread)
    topo = topology.build(settings)
    steps = rollout_order.rollout_steps(topo)
    setups = rollout_order.setup_points(topo, steps)
    for number, step in enumerate(steps, 1):
        if len(steps) > 1:
            lines.append(f"step {number}: " + ", ".join(f"{h} ({', '.join(s)})" for h, s in step.items()))
        for comp in setups.get(number - 1, ()):
            lines.append(f"then, from this machine: {comp.name}'s live setup")
            if comp.live_plan is None:
                continue
            try:
                live = comp.live_plan(settings)
            except ShipyardError as err:
                lines.append(f"  not compared with the running environment: {err.where}: {err.what}")
                continue
            lines += [f"  {line}" for line in live] or ["  nothing to change on the running environment"]
            total += len(live)
    for host in settings.hosts:
        access = HostView(settings, host)
        rendered = render_host(settings, host)
        on_host = topology.build(settings).instances_on(host)
        lines.append(f"host {host.name}")
        lines += [f"  {line}" for line in hostsysctl.plan_lines(settings, host)]
        image_lines = _image_plan(access, repo)
        deployed = _deployed_compose(access)
        changes = plan.service_changes(deployed, rendered.compose)
        runtime = _runtime_reasons(access, rendered)
        for name, reasons in _container_reasons(access, on_host, printed).items():
            runtime.setdefault(name, []).extend(reasons)
        wanted = {p: hashlib.sha256(c).hexdigest() for p, c in rendered.shipped.items()}
        have = access.file_digests(list(wanted))
        files = plan.file_changes(have, wanted)
        lines += [f"  image: {line}" for line in image_lines]
        lines += [f"  file: {line}" for line in files]
        for tier in dict.fromkeys(i.tier for i in on_host):
            stale = {i.name: changes.get(i.name, []) + runtime.get(i.name, []) for i in on_host if i.tier == tier}
            stale = {name: reasons for name, reasons in stale.items() if reasons}
            if not stale:
                lines.append(f"  tier {tier}: up to date")
                continue
            lines.append(f"  tier {tier}: {len(stale)} service(s) would be (re)created or started")
            for name, reasons in stale.items():
                lines.append(f"    {name}: " + "; ".join(reasons))
            total += len(stale)
        removed = [n for n, r in changes.items() if n not in {i.name for i in on_host}]
        lines += [f"  {name}: removed from the render (its container goes)" for name in removed]
        total += len(image_lines) + len(files) + len(removed)
    lines.append("nothing to do" if total == 0 else f"{total} change(s)")
    return "\n".join(lines)


def _print_container_logs(c, tail: int, follow: bool, since: float | None, minimum: int | None) -> None:
    """One container's lines. With a level, the engine's lines since ``since`` are filtered and
    the last ``tail`` kept ones shown (TAIL counts what is shown, not what was read); followed,
    the engine's last ``tail`` lines are filtered, then every new one."""
    window = {"since": int(since)} if since is not None else {}
    if follow:
        chunks = c.logs(stream=True, follow=True, tail=tail, **window)
        for line in tracing.split_lines(chunks):
            if minimum is None or tracing.at_or_above(line, minimum):
                print(line, flush=True)
        return
    raw = c.logs(tail=tail if minimum is None else "all", **window).decode(errors="replace")
    lines = raw.splitlines()
    if minimum is not None:
        lines = [line for line in lines if tracing.at_or_above(line, minimum)][-tail:] if tail > 0 else []
    if lines:
        print("\n".join(lines), flush=True)


def logs(settings: EnvironmentSettings, service: str, tail: int, follow: bool, since: float | None = None,
         minimum: int | None = None) -> int:
    """Print the last ``tail`` lines of every container of ``service`` (a compose service such
    as ``api`` or ``postgres-replica-1``, or a component such as ``redis``) on every host; only
    those logged after ``since`` (unix seconds), only JSON lines at or above level ``minimum``
    (shipyard.tracing.at_or_above; other lines are kept)."""
    shown = 0
    for host in settings.hosts:
        access = HostView(settings, host)
        for c in access.containers():
            name = c.labels.get(COMPOSE_SERVICE_LABEL, "")
            if service not in (name, c.labels.get("org.shipyard.component")):
                continue
            shown += 1
            print(f"==> {host.name} {c.name} ({health(c)}) <==", flush=True)
            _print_container_logs(c, tail, follow, since, minimum)
    if not shown:
        names = sorted({i.name for i in topology.build(settings).instances} | {c.name for c in COMPONENTS})
        print(f"no container of {service!r} in {settings.name}; one of: {', '.join(names)}")
        return 1
    return 0


def _timed_lines(host_name: str, c, since: float) -> list[tracing.LogLine]:
    """A container's lines since ``since`` with the engine's timestamps."""
    where = f"{host_name} {c.labels.get(COMPOSE_SERVICE_LABEL, c.name)}"
    out = []
    for raw in c.logs(timestamps=True, since=int(since)).decode(errors="replace").splitlines():
        parsed = tracing.split_engine_timestamp(raw)
        if parsed is not None:
            out.append(tracing.LogLine(where, parsed[0], parsed[1]))
    return out


def _stored_lines(settings: EnvironmentSettings, request_ids: set[str], task_ids: set[str],
                  since: float) -> tuple[list[tracing.LogLine], str] | None:
    """The lines of the request(s)/task(s) and of what they link to, from the environment's log
    store (Component.log_store), and where they came from; None when it has none running. A
    search finds the lines carrying the ids asked for; the ids those lines link to (the task a
    request created, the request that created a task) are searched for next, until none is new."""
    for comp in COMPONENTS:
        store = comp.log_store
        instances = topology.build(settings).instances_of(comp.name, store.service) if store else ()
        if not instances:
            continue
        inst = instances[0]
        access = HostView(settings, inst.host)
        try:
            container = access.container_of(inst.name)
        except ShipyardError as err:
            print(f"{settings.name}: the log store is not answering ({err.what}); reading the engines instead")
            return None
        wanted_requests, wanted_tasks = set(request_ids), set(task_ids)
        for _ in range(8):
            body = store.trace_query(settings, frozenset(wanted_requests), frozenset(wanted_tasks), since)
            code, out, err = exec_in(container, list(store.search_argv(settings, body)))  # a read-only search
            if code != 0:
                print(f"{settings.name}: the log store refused the search ({(err or out).strip()[-300:]}); "
                      "reading the engines instead")
                return None
            lines = [tracing.LogLine(*store.line_of(hit)) for hit in json.loads(out)["hits"]["hits"]]
            hops = tracing.follow(lines, wanted_requests, wanted_tasks)
            more_requests = set().union(*(h.request_ids for h in hops)) - wanted_requests
            more_tasks = set().union(*(h.task_ids for h in hops)) - wanted_tasks
            if not more_requests and not more_tasks:
                return lines, f"the log store ({inst.name} on {inst.host.name})"
            wanted_requests |= more_requests
            wanted_tasks |= more_tasks
        return lines, f"the log store ({inst.name} on {inst.host.name})"
    return None


def trace(settings: EnvironmentSettings, request_ids: set[str], task_ids: set[str], since: float,
          engines_only: bool = False) -> int:
    """`make trace`: every line of the request(s)/task(s) since ``since``, and of what they link
    to, merged in the order the hops started, with each hop's latency (shipyard.tracing). From
    the log store when the environment runs one (it keeps the lines of containers recreated
    since), else from every container of every engine (stopped ones too)."""
    stored = None if engines_only else _stored_lines(settings, request_ids, task_ids, since)
    if stored is not None:
        lines, source = stored
        return _print_trace(settings, tracing.follow(lines, request_ids, task_ids), request_ids, task_ids, since,
                            source)
    lines: list[tracing.LogLine] = []
    read = 0
    for host in settings.hosts:
        access = HostView(settings, host)
        containers = access.containers()
        read += len(containers)
        # Read at once: each container's log is one request to its engine, most of it waiting.
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            for found in pool.map(lambda c: _timed_lines(host.name, c, since), containers):
                lines += found
    return _print_trace(settings, tracing.follow(lines, request_ids, task_ids), request_ids, task_ids, since,
                        f"the logs of {read} containers (a recreated container's earlier lines are gone)")


def _print_trace(settings: EnvironmentSettings, hops: list[tracing.Hop], request_ids: set[str], task_ids: set[str],
                 since: float, source: str) -> int:
    wanted = ", ".join([*(f"request {r}" for r in sorted(request_ids)), *(f"task {t}" for t in sorted(task_ids))])
    if not hops:
        print(f"{settings.name}: no line of {wanted} in {source} since "
              f"{dt.datetime.fromtimestamp(since, dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC (an older one: SINCE=)")
        return 1
    print(f"{settings.name}: {wanted}: {len(hops)} lines from {len({h.line.where for h in hops})} containers, "
          f"read from {source}")
    print(tracing.trace_table(hops))
    return 0
