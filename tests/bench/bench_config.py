"""`make bench-config`: how fast a runtime config push reaches every process, against the
floor of the mechanism, in one run.

- 50 pushes of one key (``retry_base_seconds``, alternating) under light task traffic, written
  with check-and-set as `make config-push` writes them; for each, the seconds from the write's
  acknowledgment to the moment the *last* API process or worker applied it (each process
  records when it applied: ``applied_at`` in its report; one clock, one machine).
- The floor, in the same run: a raw blocking query on the key (the controller's own, with the
  management token) returning after a write, from the write's acknowledgment.
Targets: p99 < 1 s to all instances; p50 <= 3x the floor's p50. Rolls out ENV first, leaves it
removed (`make down VOLUMES=1`). Loopback only; bounded (50 + 50 writes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shipyard.components.consul.kv import ConsulKV  # noqa: E402
from shipyard.components.taskplatform import runtime  # noqa: E402
from shipyard.inventory import load_environment  # noqa: E402
from shipyard.secretstore import load_or_create  # noqa: E402
from tests.drill_traffic import Traffic, api_client  # noqa: E402

PUSHES = 50


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _push_once(settings, kv: ConsulKV, key: str, value: float) -> float:
    """Seconds from the write's acknowledgment until every process applied it."""
    read = kv.get(key)
    doc = json.loads(read.value)
    raw = runtime.encode({**doc, "version": str(int(doc["version"]) + 1), "retry_base_seconds": value})
    kv.write(key, raw, read.modify_index)
    acked = time.time()
    wanted = runtime.doc_hash(raw)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reports, silent = runtime.read_reports(settings)
        if reports and not silent and all(r.state.get("hash") == wanted for r in reports):
            return max(r.state["applied_at"] for r in reports) - acked
        time.sleep(0.02)
    raise SystemExit(f"bench: push {value} not applied everywhere within 10 s")


def _floor_once(kv: ConsulKV, key: str) -> float:
    """A blocking query's return after a write, from the write's acknowledgment (a key of its
    own, which no process watches)."""
    read = kv.get(key)
    if read is None:
        kv.write(key, b"0", 0)
        read = kv.get(key)
    returned: list[float] = []
    ready = threading.Event()

    def watch():
        ready.set()
        kv.session.get(f"{kv.bases[0]}/kv/{key}", params={"index": read.modify_index, "wait": "10s"}, timeout=20)
        returned.append(time.time())

    watcher = threading.Thread(target=watch)
    watcher.start()
    ready.wait()
    time.sleep(0.05)  # the query is parked at the server before the write
    kv.write(key, str(int(read.value) + 1).encode(), read.modify_index)  # wakes the query
    acked = time.time()
    watcher.join(20)
    return returned[0] - acked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="local")
    args = parser.parse_args()
    settings = load_environment(REPO, args.env, dict(os.environ))
    up = subprocess.run([sys.executable, "-m", "shipyard", "up", "--env", args.env], cwd=REPO,
                        capture_output=True, text=True)
    if up.returncode != 0:
        sys.exit(f"bench: rollout of {args.env} failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
    token = load_or_create(REPO, args.env, generate_missing=False)["consul_management_token"].value
    kv, key = ConsulKV(settings, token), runtime.runtime_key(settings.name)
    pushes, floor = [], []
    try:
        client = api_client(settings)
        with Traffic(client, interval_s=0.1) as traffic:  # light traffic: ~10 creates/s
            for n in range(PUSHES):
                pushes.append(_push_once(settings, kv, key, 1.0 + (n % 2) / 2))
                floor.append(_floor_once(kv, f"shipyard/{settings.name}/bench/floor"))
        processes = len(runtime.read_reports(settings)[0])
    finally:
        subprocess.run([sys.executable, "-m", "shipyard", "down", "--env", args.env, "--volumes"], cwd=REPO,
                       capture_output=True)
    ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731
    print(f"bench-config env={args.env}: {PUSHES} pushes of one key under light traffic "
          f"({len(traffic.accepted)} tasks accepted, {traffic.refused} refused), {processes} processes")
    print(f"  write ack -> applied on every process: p50 {ms(statistics.median(pushes))}  "
          f"p95 {ms(_quantile(pushes, 0.95))}  p99 {ms(_quantile(pushes, 0.99))}  max {ms(max(pushes))}")
    print(f"  floor (raw blocking query returns):   p50 {ms(statistics.median(floor))}  "
          f"p95 {ms(_quantile(floor, 0.95))}  p99 {ms(_quantile(floor, 0.99))}")
    ratio = statistics.median(pushes) / max(statistics.median(floor), 1e-6)
    print(f"  p50 / floor p50: {ratio:.1f}x")
    print(f"  target p99 < 1 s: {'MET' if _quantile(pushes, 0.99) < 1 else 'MISSED'}; "
          f"target p50 <= 3x floor: {'MET' if ratio <= 3 else 'MISSED'}")


if __name__ == "__main__":
    main()
