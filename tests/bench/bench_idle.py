"""`make bench-idle`: the idle CPU cost of an already rolled-out environment, with no traffic.

A rolled-out stack costs CPU even when nobody uses it: every container's health probe is a
`docker exec` (every second until it first passes, then every ~31 s: shipyard/render/compose.py),
plus the components' own timers (Sentinel pings, replication, backups, worker polling). This measures that cost; it rolls nothing out (run `make up ENV=..`).

- Whole machine, from /proc/stat (busy = total - idle - iowait, as % of one core) over a window:
  A) stack running; B) the stack's containers paused. A-B is the headline "stack idle cost":
  it includes the `docker exec` machinery (dockerd, containerd, shim, runc), which runs outside
  the containers' cgroups. On docker 20.10 a paused container gets no health probes (its monitor
  stops and it reads `unhealthy` until the first probe after unpause), so B excludes probes.
- Per component: the containers' cgroup CPU over window A (docker stats), grouped by the label
  `org.shipyard.component` (else the compose service), and the health-probe interval: the
  time between the last two probes in State.Health.Log.
Containers are always unpaused (finally, also on Ctrl-C/SIGTERM), then awaited until healthy.

The environment (tests/bench/benchenv.py): a real one is refused (pausing it is an outage);
the one measured is left as it was found, running. --short: 5-second windows (`make test`).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import docker
import requests
from docker.errors import APIError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shipyard import topology  # noqa: E402
from shipyard.inventory import load_environment  # noqa: E402
from tests.bench import benchenv  # noqa: E402

TARGET = 5.0  # % of one core, for A-B
HEALTH_TIMEOUT = 120.0  # seconds to wait for every container to be healthy (before A, after B)


def proc_stat() -> tuple[int, int, int]:
    """(busy jiffies, total jiffies, cpus) over all CPUs; guest time is already in user/nice."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    v = [int(x) for x in lines[0].split()[1:9]]  # user nice system idle iowait irq softirq steal
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3].isdigit())
    return sum(v) - v[3] - v[4], sum(v), cpus


def machine_window(seconds: float) -> float:
    """Whole-machine busy CPU over `seconds`, as % of one core."""
    busy0, total0, cpus = proc_stat()
    time.sleep(seconds)
    busy1, total1, _ = proc_stat()
    return 100.0 * (busy1 - busy0) / ((total1 - total0) / cpus)


def ts(value: str) -> float:
    """Seconds of a docker RFC3339Nano UTC timestamp (Go trims trailing zeros of the fraction)."""
    head, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(head[:19] + "+00:00").timestamp() + float("0." + (frac.rstrip("0") or "0"))


def cpu_samples(containers) -> dict[str, tuple[int, float]]:
    """container id -> (cgroup CPU ns, sample time); parallel: each call waits ~1 s for a tick."""
    def one(c):
        s = c.stats(stream=False, one_shot=True)
        return c.id, (s["cpu_stats"]["cpu_usage"]["total_usage"], ts(s["read"]))
    with ThreadPoolExecutor(max_workers=len(containers)) as pool:
        return dict(pool.map(one, containers))


def component(c) -> str:
    """The row a container counts in: its component, except that the exporters (each in the
    component it watches) count together, so that what monitoring costs reads off the table:
    the exporters, node, prometheus and alertmanager rows."""
    service = c.labels.get("com.docker.compose.service", c.name)
    if service.endswith("-exporter") or "-exporter-" in service:
        return "(exporters)"
    return c.labels.get("org.shipyard.component") or service


def probe_interval(c) -> float | None:
    """Seconds between the last two probes: the steady-state cadence (probes are fast until
    the first success, then slow; the earlier ones describe the start, not the idle state)."""
    log = (c.attrs["State"].get("Health") or {}).get("Log") or []
    starts = sorted(ts(p["Start"]) for p in log[-5:])
    return starts[-1] - starts[-2] if len(starts) >= 2 else None


# A probe cadence below this is a container's start (probes 1 s apart until the first success),
# not its idle state (one probe per ~31 s once healthy: shipyard.render.compose.healthcheck).
STEADY_PROBE_S = 10.0


def wait_healthy(containers, timeout: float, steady: bool = False) -> None:
    """Poll until every container runs and (when it has a healthcheck) is healthy; ``steady``:
    and probes at its idle cadence (one just started, by the e2e tests before, would count its
    start as idle cost)."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = []
        for c in containers:
            c.reload()
            status, health = c.status, (c.attrs["State"].get("Health") or {}).get("Status", "healthy")
            interval = probe_interval(c) if steady and c.attrs["State"].get("Health") else None
            if status != "running" or health != "healthy":
                waiting.append(f"{c.name} ({status}/{health})")
            elif interval is not None and interval < STEADY_PROBE_S:
                waiting.append(f"{c.name} (probes {interval:.1f} s apart: still starting)")
        if not waiting:
            return
        if time.monotonic() > deadline:
            sys.exit(f"bench-idle: not healthy after {timeout:.0f} s: {', '.join(waiting)}")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=benchenv.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="ci")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each window")
    parser.add_argument("--short", action="store_true", help="5-second windows (a check that the bench works)")
    args = parser.parse_args()
    if args.short:
        args.seconds = 5.0
    settings = load_environment(REPO, args.env, dict(os.environ))
    benchenv.refuse_real(settings, "bench-idle")
    project = settings.compose_project
    client = docker.from_env()
    containers = client.containers.list(filters={"label": f"com.docker.compose.project={project}",
                                                 "status": "running"})
    if not containers:
        sys.exit(f"bench-idle: compose project {project} has no running containers; "
                 f"run `make up ENV={args.env}` first")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below runs
    try:
        wait_healthy(containers, HEALTH_TIMEOUT, steady=True)
        intervals = {c.id: probe_interval(c) for c in containers}
        cg0 = cpu_samples(containers)  # outside the window: stats calls cost dockerd CPU
        running = machine_window(args.seconds)
        cg1 = cpu_samples(containers)
        try:
            for c in containers:
                c.pause()
            paused = machine_window(args.seconds)
        finally:  # also on Ctrl-C/SIGTERM, which are ignored until every container is unpaused
            held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            for c in containers:
                try:
                    c.reload()
                    if c.status == "paused":
                        c.unpause()
                except APIError as exc:
                    print(f"bench-idle: could not unpause {c.name}: {exc}", file=sys.stderr)
            for sig, handler in held.items():
                signal.signal(sig, handler)
            wait_healthy(containers, HEALTH_TIMEOUT)  # unpaused ones read unhealthy until a probe
    except APIError as exc:  # NotFound included: torn down or recreated while we measured
        sys.exit(f"bench-idle: {project} changed mid-run ({exc}); retry when it is up")

    cost = running - paused
    print(f"bench-idle env={args.env} window={args.seconds:.0f}s cpus={proc_stat()[2]} "
          f"containers={len(containers)} (no traffic; % of one core)")
    print(f"  A  whole machine, stack running  {running:6.2f}")
    print(f"  B  whole machine, stack paused   {paused:6.2f}")
    print(f"  A-B stack idle cost, % of one core {cost:6.2f}")
    print(f"  target <= {TARGET:.1f} % of one core  {'OK' if cost <= TARGET else 'MISSED'}")
    rows: dict[str, list] = defaultdict(list)  # component -> [(cgroup cpu %, probe interval)]
    for c in containers:
        (u0, t0), (u1, t1) = cg0[c.id], cg1[c.id]
        rows[component(c)].append((100.0 * (u1 - u0) / ((t1 - t0) * 1e9), intervals[c.id]))
    print("per component, window A: container cgroup CPU, health probes (steady-state interval)")
    print(f"  {'component':<22}{'n':>3}{'cpu %':>8}{'probe every':>13}{'probes/min':>12}")
    for name, row in sorted(rows.items(), key=lambda kv: -sum(cpu for cpu, _ in kv[1])):
        ivs = [iv for _, iv in row if iv]
        every = f"{statistics.median(ivs):.2f} s" if ivs else "-"
        print(f"  {name:<22}{len(row):>3}{sum(cpu for cpu, _ in row):8.2f}{every:>13}"
              f"{sum(60.0 / iv for iv in ivs):12.0f}")
    allrows = [x for row in rows.values() for x in row]
    print(f"  {'sum':<22}{len(allrows):>3}{sum(cpu for cpu, _ in allrows):8.2f}{'':>13}"
          f"{sum(60.0 / iv for _, iv in allrows if iv):12.0f}")
    monitoring = sum(cpu for name in ("(exporters)", "node", "prometheus", "alertmanager", "grafana")
                     for cpu, _ in rows.get(name, []))
    print(f"  {'of which monitoring':<22}{'':>3}{monitoring:8.2f}")
    print("note: each probe's command runs inside its container's cgroup (counted above), but the\n"
          "  `docker exec` machinery behind it (dockerd, containerd, shim, runc) runs outside the\n"
          "  containers' cgroups: that lands only in the whole-machine A-B, the headline figure.")
    print_prometheus(settings)


def _own_metrics(url: str, names: tuple[str, ...]) -> dict[str, float]:
    """Unlabelled samples of ``names`` from a /metrics page (the text format)."""
    found = {}
    for line in requests.get(url, timeout=5).text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            found[name] = float(value)
    return found


def print_prometheus(settings) -> None:
    """Prometheus's own memory and head series, and how long it has run: the issue's figure is
    after 10 minutes of `ci` (run the bench when it has been up that long)."""
    topo = topology.build(settings)
    proms = topo.instances_of("prometheus", "prometheus")
    if not proms:
        return
    bind, port = topo.binding(proms[0])
    try:
        own = _own_metrics(f"http://{bind}:{port}/metrics", ("process_resident_memory_bytes",
                                                             "prometheus_tsdb_head_series", "process_start_time_seconds"))
    except requests.RequestException as exc:
        print(f"prometheus: its /metrics did not answer at {bind}:{port} ({exc})")
        return
    up_min = (time.time() - own["process_start_time_seconds"]) / 60
    print(f"prometheus: RSS {own['process_resident_memory_bytes'] / 2**20:.1f} MiB, "
          f"{own['prometheus_tsdb_head_series']:.0f} head series, up {up_min:.1f} min"
          f"{'' if up_min >= 10 else ' (the issue asks for the figure after 10 minutes)'}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("bench-idle: interrupted (the stack was unpaused)")
