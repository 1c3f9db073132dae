"""`make bench-logs`: what central logs cost and carry, on a rolled-out environment, in one run.

- **Shipping throughput**: a throwaway container of the environment's project (labelled as its
  services are, so the shipper takes its lines) writes N JSON lines as fast as it can; timed
  from its start to the moment the store counts all N. That is the shipper and the store
  together (here the store is the stand-in: docs/logs.md). With it: the shipper's CPU per
  1,000 lines (its cgroup's CPU time over the flood) and its memory at the end.
- **The API with shipping on and off**: task creations through the edge (wrk, the bench-api
  script, one token per tenant in turn so that no tenant's rate limit is what is measured),
  for a fixed window with the shipper running, then with it stopped, in pairs (A/B, alternated
  so that drift hits both); the ratio of throughputs. Goal: >= 0.95. While the shipper is
  stopped lines wait in the engine's files; it catches up when started again (the bench waits
  for that before it ends).

Rolls out ENV first. Loopback only; bounded (--short: 20,000 lines, one pair of 5 s windows,
for `make test`).

The environment (tests/bench/benchenv.py): a real one is refused; one the bench did not create
is left as it was found (the shipper running again, the throwaway container removed; the tasks
it created are processed and stay, in tenants of their own: bench-logs-*); one it created is
removed (`make down VOLUMES=1`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "services"))

import docker  # noqa: E402
import requests  # noqa: E402

from shipyard import topology  # noqa: E402
from shipyard.inventory import load_environment  # noqa: E402
from shipyard.render.compose import _LOGGING  # noqa: E402
from tests.bench import benchenv  # noqa: E402
from tests.drill_traffic import api_client  # noqa: E402

WRK_SCRIPT = REPO / "services" / "bench" / "create_task.lua"
TENANTS = 64  # 64 x the default 6,000 requests a minute: far above what one machine serves
GOAL_RATIO = 0.95
LINES_PER_CREATION = 4


def _store_url(settings) -> str:
    bind, port = topology.build(settings).published(settings.hosts[0], "elasticsearch-1")
    return f"http://{bind}:{port}/shipyard-logs-{settings.name}-*"


def _count(store: str, run: str) -> int:
    answer = requests.post(f"{store}/_count", json={"query": {"term": {"service": run}}}, timeout=30)
    answer.raise_for_status()
    return answer.json()["count"]


def _cpu_ns(container) -> int:
    return container.stats(stream=False)["cpu_stats"]["cpu_usage"]["total_usage"]


def shipping_throughput(settings, engine, shipper, store_container, lines: int) -> dict:
    """N lines from a throwaway container of the project; seconds until the store holds them all,
    and the CPU the shipper and the store spent on them."""
    store, run = _store_url(settings), f"bench-logs-{uuid.uuid4().hex[:8]}"
    labels = {"com.docker.compose.project": settings.compose_project, "com.docker.compose.service": run,
              "org.shipyard.component": "bench"}
    # The platform's line shape, each with its number: the shipper parses every one as JSON.
    script = (f"seq 1 {lines} | sed 's/.*/{{\"level\": \"info\", \"logger\": \"bench\", \"msg\": \"line\", "
              "\"n\": &, \"request_id\": \"bench-&\"}/'")
    cpu_before, store_before, started = _cpu_ns(shipper), _cpu_ns(store_container), time.monotonic()
    flood = engine.containers.run("shipyard/base:bookworm", ["sh", "-c", script], labels=labels, detach=True,
                                  log_config=docker.types.LogConfig(type="json-file", config=_LOGGING["options"]))
    try:
        deadline = started + max(120, lines / 200)
        while (stored := _count(store, run)) < lines:
            if time.monotonic() > deadline:
                sys.exit(f"bench-logs: {stored} of {lines} lines stored after {deadline - started:.0f} s")
            time.sleep(0.2)
        took = time.monotonic() - started
        cpu_s = (_cpu_ns(shipper) - cpu_before) / 1e9
        store_cpu_s = (_cpu_ns(store_container) - store_before) / 1e9
        memory_mb = shipper.stats(stream=False)["memory_stats"].get("usage", 0) / 2**20
    finally:
        flood.remove(force=True)
    return {"lines": lines, "seconds": took, "lines_per_s": lines / took, "cpu_ms_per_1000": cpu_s * 1e6 / lines,
            "store_cpu_ms_per_1000": store_cpu_s * 1e6 / lines, "shipper_memory_mb": memory_mb}


def _wrk(url: str, tokens: str, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t", "2", "-c", "16", "-d", f"{seconds}s", "--timeout", "5s", "-s", str(WRK_SCRIPT),
                          url], env=dict(os.environ, BENCH_TOKEN=tokens), capture_output=True, text=True,
                         timeout=seconds + 60)
    line = next((l for l in out.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        sys.exit(f"bench-logs: wrk printed no result:\n{out.stdout}\n{out.stderr}")
    result = json.loads(line.split(" ", 1)[1])
    if result["accepted"] < result["requests"] * 0.99:
        sys.exit(f"bench-logs: only {result['accepted']} of {result['requests']} creations accepted: {result}")
    return result["accepted"] / result["duration_s"]


def api_with_and_without_shipping(settings, shipper, pairs: int, seconds: int) -> dict:
    clients = [api_client(settings, tenant=f"bench-logs-{n}") for n in range(TENANTS)]
    tokens = ",".join(c.headers["Authorization"].removeprefix("Bearer ") for c in clients)
    bind, port = topology.build(settings).published(settings.hosts[0], "edge")
    url = f"http://{bind}:{port}"
    on, off = [], []
    try:
        for n in range(pairs):
            order = ("on", "off") if n % 2 == 0 else ("off", "on")
            for side in order:
                if side == "off":
                    shipper.stop()
                else:
                    shipper.start()
                (on if side == "on" else off).append(_wrk(url, tokens, seconds))
    finally:
        shipper.reload()
        if shipper.status != "running":
            shipper.start()
    return {"on_rps": sum(on) / len(on), "off_rps": sum(off) / len(off),
            "ratio": (sum(on) / len(on)) / (sum(off) / len(off)), "pairs": pairs, "seconds": seconds}


def caught_up(settings, timeout_s: float = 300) -> float:
    """Seconds until the store holds the edge's line of a request made now: the shipper reads a
    file in order, so it has then read what waited in the edge's file while it was stopped."""
    store = _store_url(settings)
    client = api_client(settings, tenant="bench-logs-0")
    started = time.monotonic()
    request_id = client.get(f"{client.base}/v1/tasks", params={"limit": 1}, timeout=10).headers["X-Request-ID"]
    query = {"bool": {"filter": [{"term": {"request_id": request_id}}, {"term": {"service": "edge"}}]}}
    while requests.post(f"{store}/_count", json={"query": query}, timeout=30).json()["count"] < 1:
        if time.monotonic() - started > timeout_s:
            sys.exit(f"bench-logs: the shipper did not catch up within {timeout_s} s")
        time.sleep(0.2)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=benchenv.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="local")
    parser.add_argument("--short", action="store_true", help="20,000 lines, one pair of 5 s windows (make test)")
    args = parser.parse_args()
    lines, pairs, seconds = (20_000, 1, 5) if args.short else (100_000, 3, 15)
    if not shutil.which("wrk"):
        sys.exit("bench-logs: wrk is not installed (apt-get install wrk; `make bench-logs` installs it)")
    settings = load_environment(REPO, args.env, dict(os.environ))
    benchenv.refuse_real(settings, "bench-logs")
    if not settings.logs.enabled:
        sys.exit(f"bench-logs: environment {args.env} ships no logs (logs.enabled is false)")
    was = benchenv.found(settings)
    try:
        benchenv.roll_out(args.env, "bench-logs")
        engine = docker.from_env()
        shipper = engine.containers.get(f"{settings.compose_project}-logship-1")
        store_container = engine.containers.get(f"{settings.compose_project}-elasticsearch-1-1")
        throughput = shipping_throughput(settings, engine, shipper, store_container, lines)
        api = api_with_and_without_shipping(settings, shipper, pairs, seconds)
        catch_up_s = caught_up(settings)
    finally:
        left = benchenv.leave_as_found(was, "bench-logs")
    print(f"bench-logs on {args.env} ({'short' if args.short else 'full'} run)")
    print(f"  shipping: {throughput['lines']} lines stored in {throughput['seconds']:.1f} s = "
          f"{throughput['lines_per_s']:.0f} lines/s (shipper + the store; here the stand-in)")
    print(f"  CPU per 1,000 lines: the shipper {throughput['cpu_ms_per_1000']:.1f} ms, the store "
          f"{throughput['store_cpu_ms_per_1000']:.1f} ms; the shipper's memory {throughput['shipper_memory_mb']:.0f} MB "
          "after the flood")
    print(f"  API through the edge: {api['on_rps']:.0f} creations/s shipping, {api['off_rps']:.0f} without "
          f"({api['pairs']} pair(s) of {api['seconds']} s windows, alternated)")
    verdict = "PASS" if api["ratio"] >= GOAL_RATIO else "MISSED"
    print(f"  ratio shipping on / off: {api['ratio']:.3f} (goal >= {GOAL_RATIO}): {verdict}")
    # Each creation is logged by the edge, the router, the API and the worker that runs it.
    lines_per_s = api["on_rps"] * LINES_PER_CREATION
    print(f"  at {api['on_rps']:.0f} creations/s (~{lines_per_s:.0f} lines/s) the shipper takes "
          f"~{lines_per_s * throughput['cpu_ms_per_1000'] / 1e4:.1f} % of one core and the store "
          f"~{lines_per_s * throughput['store_cpu_ms_per_1000'] / 1e4:.1f} %: here both share the machine's "
          f"{os.cpu_count()} cores with the API (elsewhere the store has a host of its own)")
    print(f"  after the shipper was stopped and started again: caught up in {catch_up_s:.1f} s")
    if not left:
        sys.exit(1)


if __name__ == "__main__":
    main()
