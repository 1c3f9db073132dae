"""`make bench-logs`: what central logs cost and carry, on a rolled-out environment, in one run.

- **Shipping throughput**: a throwaway container of the environment's project (labelled as its
  services are, so the shipper takes its lines) writes N JSON lines as fast as it can; timed
  from its start to the moment the store counts all N. That is the shipper and the store
  together (here the store is the stand-in: docs/logs.md). With it: the shipper's CPU per
  1,000 lines (its cgroup's CPU time over the flood) and its memory at the end.
- **The API with shipping on and off**: task creations through the edge (wrk, the bench-api
  script, one token per tenant in turn so that no tenant's rate limit is what is measured),
  for a fixed window with the shipper running, then with it stopped, in rounds (alternated so
  that drift hits every side; each window starts once the machine is quiet again: the previous
  window's tasks processed, its lines stored); the ratio of throughputs. Goal: >= 0.95. While the shipper is
  stopped lines wait in the engine's files; it catches up when started again (the bench waits
  for that before the next window).
- **The same with the store elsewhere**: here the store shares the machine's cores with the
  API, where a real environment gives it hosts of its own (the observability group). A third
  window per round takes the store's indexing off this machine while the shipper does all of
  its own work: the store's container is taken off the project network and a sink (nginx from
  the edge's image, on the store's address and names) answers every `_bulk` as accepted and
  drops it. The shipper is restarted around the swap, so that it resolves the store's name
  afresh. That window's lines go to the sink, not the store (its tenants are bench-logs-*).
  The store goes back on the network with its address and names before the bench goes on.

Rolls out ENV first. Loopback only; bounded (--short: 20,000 lines, one round of 5 s windows,
for `make test`).

The stand-in store (never Elasticsearch) is restarted first and starts empty: it slows as it
fills (docs/logs.md), so the figures would otherwise say how full it was; the lines it held are
gone (it keeps nothing across any restart). The environment
(tests/bench/benchenv.py): a real one is refused; one the bench did not create is left as it was
found (the shipper running again, the throwaway container removed; the tasks
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


def empty_stand_in(store_container, timeout_s: float = 180) -> float:
    """Restart the stand-in store (docs/logs.md): it keeps every document in memory and takes
    lines ever more slowly as it fills (an environment after the e2e suite holds hundreds of
    thousands), so the figures would say how full it was. It starts empty; the shipper resends
    what it had not delivered. Seconds until it is healthy again."""
    started = time.monotonic()
    store_container.restart()
    while True:
        store_container.reload()
        if store_container.attrs["State"].get("Health", {}).get("Status") == "healthy":
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            sys.exit(f"bench-logs: the stand-in store was not healthy within {timeout_s:.0f} s of its restart")
        time.sleep(0.5)


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


# nginx answering every request as an accepted _bulk: the shipper parses the answer ("errors":
# false: nothing to retry) and goes on; the body is read and dropped. No log of its own; its
# request count (stub_status) on a second port, published on loopback, shows it was written to.
SINK_CONF = """pid /tmp/nginx.pid; error_log stderr warn; worker_processes 1;
events { worker_connections 64; }
http { access_log off; client_body_temp_path /tmp; client_max_body_size 0; client_body_buffer_size 1m;
  server { listen 9200; default_type application/json;
    location / { return 200 '{"took":0,"errors":false,"items":[]}'; } }
  server { listen 8081; location / { stub_status; } } }
"""


class StoreElsewhere:
    """The store's container off the project network and a sink on its address and names, for a
    window (a context manager); the store back as it was on exit, whatever happened."""

    def __init__(self, settings, engine, store_container):
        self.engine, self.store = engine, store_container
        self.store.reload()
        (self.network, endpoint), = self.store.attrs["NetworkSettings"]["Networks"].items()
        self.address = endpoint["IPAddress"]
        self.aliases = [a for a in endpoint.get("Aliases") or [] if a != self.store.id[:12]]
        self.edge_image = engine.containers.get(f"{settings.compose_project}-edge-1").image
        self.sink = None

    def __enter__(self):
        network = self.engine.networks.get(self.network)
        network.disconnect(self.store)
        try:
            self.sink = self.engine.containers.create(
                self.edge_image, ["sh", "-c", 'printf "%s" "$SINK_CONF" >/tmp/sink.conf && '
                                              "exec nginx -c /tmp/sink.conf -g 'daemon off;'"],
                environment={"SINK_CONF": SINK_CONF}, user="65534:65534", tmpfs={"/tmp": ""},
                ports={"8081/tcp": ("127.0.0.1", None)}, labels={"org.shipyard.component": "bench"},
                mem_limit="64m")
            network.connect(self.sink, ipv4_address=self.address, aliases=self.aliases)
            self.sink.start()
            self.requests()  # answers, or the window is not what it says
        except BaseException:
            self._store_back()
            raise
        return self

    def requests(self, timeout_s: float = 30) -> int:
        """How many requests the sink has answered (its status requests included)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.sink.reload()
            if self.sink.status == "exited":
                sys.exit(f"bench-logs: the sink ended: {self.sink.logs(tail=5).decode(errors='replace')}")
            bound = (self.sink.ports.get("8081/tcp") or [{}])[0]
            try:
                status = requests.get(f"http://127.0.0.1:{bound['HostPort']}/", timeout=5).text
                return int(status.splitlines()[2].split()[2])
            except (KeyError, requests.RequestException):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def __exit__(self, *exc):
        self._store_back()

    def _store_back(self):
        if self.sink is not None:
            self.sink.remove(force=True)
            self.sink = None
        self.engine.networks.get(self.network).connect(self.store, ipv4_address=self.address, aliases=self.aliases)
        self.store.reload()
        if self.network not in self.store.attrs["NetworkSettings"]["Networks"]:
            sys.exit(f"bench-logs: {self.store.name} is not back on {self.network}: `make up ENV=..` reconnects it")


def api_with_and_without_shipping(settings, engine, shipper, store_container, rounds: int, seconds: int) -> dict:
    """Creations/s through the edge in three windows a round: the shipper running ("on"), stopped
    ("off"), running with the store's work elsewhere ("elsewhere"); the order rotates each round."""
    clients = [api_client(settings, tenant=f"bench-logs-{n}") for n in range(TENANTS)]
    tokens = ",".join(c.headers["Authorization"].removeprefix("Bearer ") for c in clients)
    bind, port = topology.build(settings).published(settings.hosts[0], "edge")
    url = f"http://{bind}:{port}"
    sides = ["on", "off", "elsewhere"]
    rates: dict[str, list[float]] = {side: [] for side in sides}
    catch_up_s: list[float] = []
    shipper_share: list[float] = []  # of one core, over each "elsewhere" window
    noisy = 0  # windows started on a machine that had not gone quiet
    try:
        for n in range(rounds):
            for side in sides[n % 3:] + sides[:n % 3]:
                if not benchenv.wait_quiet("bench-logs"):
                    noisy += 1
                if side == "off":
                    shipper.stop()
                    rates[side].append(_wrk(url, tokens, seconds))
                    # Started again, it reads what waited in the files: outside every window.
                    shipper.start()
                    catch_up_s.append(caught_up(settings))
                elif side == "on":
                    rates[side].append(_wrk(url, tokens, seconds))
                else:
                    shipper.stop()
                    with StoreElsewhere(settings, engine, store_container) as elsewhere:
                        shipper.start()
                        cpu_before, started = _cpu_ns(shipper), time.monotonic()
                        answered = elsewhere.requests()
                        rates[side].append(_wrk(url, tokens, seconds))
                        shipper_share.append((_cpu_ns(shipper) - cpu_before) / 1e9 / (time.monotonic() - started))
                        if elsewhere.requests() - answered < 2:
                            sys.exit("bench-logs: the shipper sent nothing to the sink in its window")
                        shipper.stop()
                    shipper.start()
    finally:
        shipper.reload()
        if shipper.status != "running":
            shipper.start()
    mean = {side: sum(r) / len(r) for side, r in rates.items()}
    return {"on_rps": mean["on"], "off_rps": mean["off"], "elsewhere_rps": mean["elsewhere"],
            "ratio": mean["on"] / mean["off"], "ratio_elsewhere": mean["elsewhere"] / mean["off"],
            "rounds": rounds, "seconds": seconds, "catch_up_s": max(catch_up_s), "windows": rates,
            "shipper_share": sum(shipper_share) / len(shipper_share), "noisy": noisy}


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
    parser.add_argument("--short", action="store_true", help="20,000 lines, one round of 5 s windows (make test)")
    args = parser.parse_args()
    lines, rounds, seconds = (20_000, 1, 5) if args.short else (100_000, 3, 15)
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
        if settings.images.source != "official":
            emptied_s = empty_stand_in(store_container)
        throughput = shipping_throughput(settings, engine, shipper, store_container, lines)
        api = api_with_and_without_shipping(settings, engine, shipper, store_container, rounds, seconds)
    finally:
        left = benchenv.leave_as_found(was, "bench-logs")
    print(f"bench-logs on {args.env} ({'short' if args.short else 'full'} run)")
    if settings.images.source != "official":
        print(f"  the stand-in store restarted empty first (healthy again in {emptied_s:.1f} s)")
    print(f"  shipping: {throughput['lines']} lines stored in {throughput['seconds']:.1f} s = "
          f"{throughput['lines_per_s']:.0f} lines/s (shipper + the store; here the stand-in)")
    print(f"  CPU per 1,000 lines: the shipper {throughput['cpu_ms_per_1000']:.1f} ms, the store "
          f"{throughput['store_cpu_ms_per_1000']:.1f} ms; the shipper's memory {throughput['shipper_memory_mb']:.0f} MB "
          "after the flood")
    print(f"  API through the edge: {api['on_rps']:.0f} creations/s shipping, {api['off_rps']:.0f} without, "
          f"{api['elsewhere_rps']:.0f} shipping with the store's work off this machine "
          f"({api['rounds']} round(s) of 3 windows of {api['seconds']} s, order rotated)")
    if api["noisy"]:
        print(f"  {api['noisy']} of {3 * api['rounds']} windows started on a machine that had not gone quiet: "
              "something else was running; take these figures as noisy")
    print("  each window (creations/s): " + "; ".join(f"{side} " + ", ".join(f"{r:.0f}" for r in rates)
                                                      for side, rates in api["windows"].items()))
    verdict = "PASS" if api["ratio"] >= GOAL_RATIO else "MISSED"
    print(f"  ratio shipping on / off, the store on the same cores: {api['ratio']:.3f} (goal >= {GOAL_RATIO}): {verdict}")
    verdict = "PASS" if api["ratio_elsewhere"] >= GOAL_RATIO else "MISSED"
    print(f"  ratio shipping on / off, the store elsewhere (an app host's cost): {api['ratio_elsewhere']:.3f} "
          f"(goal >= {GOAL_RATIO}): {verdict}")
    print(f"  the shipper's CPU over those windows (the store elsewhere): {api['shipper_share'] * 100:.1f} % of one core "
          f"at {api['elsewhere_rps']:.0f} creations/s")
    # Each creation is logged by the edge, the router, the API and the worker that runs it.
    lines_per_s = api["on_rps"] * LINES_PER_CREATION
    print(f"  at {api['on_rps']:.0f} creations/s (~{lines_per_s:.0f} lines/s) the shipper takes "
          f"~{lines_per_s * throughput['cpu_ms_per_1000'] / 1e4:.1f} % of one core and the store "
          f"~{lines_per_s * throughput['store_cpu_ms_per_1000'] / 1e4:.1f} %: here both share the machine's "
          f"{os.cpu_count()} cores with the API (elsewhere the store has a host of its own)")
    print(f"  after the shipper was stopped for a window and started again: caught up in at most "
          f"{api['catch_up_s']:.1f} s (before the next window)")
    if not left:
        sys.exit(1)


if __name__ == "__main__":
    main()
