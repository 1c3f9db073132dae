"""`make bench-config`: how fast a runtime config push reaches every process, against the
floor of the mechanism, in one run.

- 50 pushes of one key (``retry_base_seconds``, alternating) under light task traffic, written
  with check-and-set as `make config-push` writes them; for each, the seconds from the write's
  acknowledgment to the moment the *last* API process or worker applied it (each process
  records when it applied: ``applied_at`` in its report; one clock, one machine).
- Two floors, in the same run, each a write to a key of its own that no process watches, with
  raw blocking queries on it (the controller's own, with the management token; one connection
  each, parked before the write), timed from the write's acknowledgment to the last one's
  complete response:
  - the floor the issue names: one query;
  - the fan-out floor: as many queries as there are processes, which is what a push has to
    wake (Consul answers each, and on this machine their clients share the same cores).
- For information, the same figures from just before the write is sent: a blocking query wakes
  when the server applies the write, which can come before the writer has its acknowledgment.
Targets: p99 < 1 s to all instances; p50 <= 3x the floor's p50 (judged against each floor).
Rolls out ENV first. Loopback only; bounded (50 + 50 + 50 writes; --short: 10 of each, for
`make test`).

The environment (tests/bench/benchenv.py): a real one is refused; one the bench did not create
is left as it was found: its runtime config document pushed back as it was (as `make config-push`
does: one more version, in `make config-history`) and the floor's key deleted; one it created is removed
(`make down VOLUMES=1`).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shipyard.components.consul.kv import ConsulKV  # noqa: E402
from shipyard.components.taskplatform import consul_keys, runtime  # noqa: E402
from shipyard.inventory import load_environment  # noqa: E402
from shipyard.secretstore import load_or_create  # noqa: E402
from tests.bench import benchenv  # noqa: E402
from tests.drill_traffic import Traffic, api_client  # noqa: E402

PUSHES = 50
# The first look at the processes' reports comes this long after the write. A look is a docker
# exec per container (runc, containerd, dockerd): CPU that, on this 2-core machine, would land
# on the processes still applying the push. The figure is each process's own applied_at, so the
# wait does not enter it; a push slower than this is simply found by a later look.
FIRST_LOOK_S = 0.1
# Consul says nothing when a blocking query is parked: the floors' queries get this long to
# reach the server before the write (a query that answers before the write stops the bench).
PARK_S = 0.05
FLOOR_KEY = "bench/floor"  # under the environment's prefix (consul_keys.env_prefix)


@dataclass(frozen=True)
class Sample:
    from_ack: float  # seconds from the write's acknowledgment
    from_send: float  # seconds from just before the write was sent


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _push_once(settings, kv: ConsulKV, key: str, value: float) -> Sample:
    """Until every process applied the pushed document: its last ``applied_at``."""
    read = kv.get(key)
    doc = json.loads(read.value)
    raw = runtime.encode({**doc, "version": str(int(doc["version"]) + 1), "retry_base_seconds": value})
    sent = time.time()
    kv.write(key, raw, read.modify_index)
    acked = time.time()
    wanted = runtime.doc_hash(raw)
    time.sleep(FIRST_LOOK_S)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reports, silent = runtime.read_reports(settings)
        if reports and not silent and all(r.state.get("hash") == wanted for r in reports):
            applied = max(r.state["applied_at"] for r in reports)
            return Sample(applied - acked, applied - sent)
        time.sleep(0.02)
    raise SystemExit(f"bench: push {value} not applied everywhere within 10 s")


def _park(kv: ConsulKV, key: str, index: int) -> socket.socket:
    """A raw blocking query on ``key``, sent on a connection of its own; the answer is left to
    ``_collect``. No HTTP library: the floor is Consul's, not a client's."""
    url = urlsplit(kv.bases[0])
    sock = socket.create_connection((url.hostname, url.port), timeout=20)
    sock.sendall((f"GET {url.path}/kv/{key}?index={index}&wait=10s HTTP/1.1\r\nHost: {url.netloc}\r\n"
                  f"X-Consul-Token: {kv.session.headers['X-Consul-Token']}\r\n\r\n").encode())
    return sock


def _complete(response: bytes) -> bool:
    head, found, body = response.partition(b"\r\n\r\n")
    if not found:
        return False
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"bench: a floor query was answered {head.splitlines()[0].decode(errors='replace')}")
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    if not lengths:
        raise SystemExit("bench: a floor query's answer has no Content-Length")
    return len(body) >= int(lengths[0])


def _collect(socks: list[socket.socket]) -> list[float]:
    """When each query's complete response arrived. One thread waiting in select for all of
    them: no query's answer waits for another's to be handled."""
    returned = []
    with selectors.DefaultSelector() as selector:
        buffers = {}
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
            buffers[sock] = b""
        while buffers:
            events = selector.select(timeout=20)
            if not events:
                raise SystemExit(f"bench: {len(buffers)} of {len(socks)} floor queries did not return within 20 s")
            for event, _ in events:
                sock = event.fileobj
                data = sock.recv(65536)
                if not data:
                    raise SystemExit("bench: Consul closed a floor query's connection before answering it")
                buffers[sock] += data
                if _complete(buffers[sock]):
                    returned.append(time.time())
                    selector.unregister(sock)
                    del buffers[sock]
                    sock.close()
    return returned


def _floor_once(kv: ConsulKV, key: str, queries: int) -> Sample:
    """``queries`` raw blocking queries parked on ``key``, one write: until the last returns."""
    read = kv.get(key)
    if read is None:
        kv.write(key, b"0", 0)
        read = kv.get(key)
    socks = [_park(kv, key, read.modify_index) for _ in range(queries)]
    with ThreadPoolExecutor(1) as pool:
        collecting = pool.submit(_collect, socks)
        time.sleep(PARK_S)
        sent = time.time()
        kv.write(key, str(int(read.value) + 1).encode(), read.modify_index)  # wakes the queries
        acked = time.time()
        returned = collecting.result()
    if min(returned) < sent:
        raise SystemExit(f"bench: a floor query returned before the write: not parked within {PARK_S} s")
    return Sample(max(returned) - acked, max(returned) - sent)


def _ratio(push_p50: float, floor_p50: float) -> tuple[str, bool]:
    """The ratio as printed, and whether it is within 3x. A floor at or before the ack (its
    queries answered before the writer had its acknowledgment) makes the target unreachable."""
    if floor_p50 <= 0:
        return f"undefined (floor p50 {_ms(floor_p50)}: answered before the ack)", False
    return f"{push_p50 / floor_p50:.1f}x", push_p50 / floor_p50 <= 3


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _figures(samples: list[float]) -> str:
    return (f"p50 {_ms(statistics.median(samples))}  p95 {_ms(_quantile(samples, 0.95))}  "
            f"p99 {_ms(_quantile(samples, 0.99))}  max {_ms(max(samples))}")


def _put_back(settings, kv: ConsulKV, token: str, found: bytes, floor_key: str) -> None:
    """The runtime config document as the bench found it, pushed as `make config-push` does (a
    new version, in the history, applied by every process); the floor's key deleted."""
    runtime.push(settings, token, json.loads(found), "bench-config: put back as found")
    if kv.get(floor_key) is not None:
        kv.delete(floor_key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=benchenv.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="local")
    parser.add_argument("--pushes", type=int, default=PUSHES, help="pushes, and writes of each floor")
    parser.add_argument("--short", action="store_true", help="10 pushes (a check that the bench works)")
    args = parser.parse_args()
    pushes_wanted = 10 if args.short else args.pushes
    settings = load_environment(REPO, args.env, dict(os.environ))
    benchenv.refuse_real(settings, "bench-config")
    was = benchenv.found(settings)
    try:
        benchenv.roll_out(args.env, "bench-config")
        token = load_or_create(REPO, args.env, generate_missing=False)["consul_management_token"].value
        kv, key = ConsulKV(settings, token), consul_keys.runtime_key(settings.name)
        floor_key = consul_keys.env_prefix(settings.name) + FLOOR_KEY
        found_doc = kv.get(key).value
        pushes: list[Sample] = []
        floor: list[Sample] = []
        fan_out: list[Sample] = []
        try:
            processes = len(runtime.read_reports(settings)[0])
            client = api_client(settings)
            with Traffic(client, interval_s=0.1) as traffic:  # light traffic: ~10 creates/s
                for n in range(pushes_wanted):
                    pushes.append(_push_once(settings, kv, key, 1.0 + (n % 2) / 2))
                    floor.append(_floor_once(kv, floor_key, 1))
                    fan_out.append(_floor_once(kv, floor_key, processes))
            reporting = len(runtime.read_reports(settings)[0])
        finally:
            if was.deployed:
                _put_back(settings, kv, token, found_doc, floor_key)
    finally:
        left = benchenv.leave_as_found(was, "bench-config")
    if not left:
        sys.exit(1)
    if reporting != processes:
        sys.exit(f"bench: {processes} processes reported at the start, {reporting} at the end")
    push_p50 = statistics.median(s.from_ack for s in pushes)
    print(f"bench-config env={args.env}: {len(pushes)} pushes of one key under light traffic "
          f"({len(traffic.accepted)} tasks accepted, {traffic.refused} refused), {processes} processes")
    rows = (("push, applied on every process", pushes), ("floor, 1 raw blocking query returns", floor),
            (f"floor, {processes} raw blocking queries, the last", fan_out))
    print("  from the write's acknowledgment:")
    for label, samples in rows:
        print(f"    {label + ':':<44} {_figures([s.from_ack for s in samples])}")
    print("  from just before the write is sent (information; the write's own round trip "
          f"p50 {_ms(statistics.median(p.from_send - p.from_ack for p in pushes))}):")
    for label, samples in rows:
        print(f"    {label + ':':<44} {_figures([s.from_send for s in samples])}")
    verdicts = []
    for name, samples in (("1 query", floor), (f"{processes} queries", fan_out)):
        ratio, met = _ratio(push_p50, statistics.median(s.from_ack for s in samples))
        ratio_send, _ = _ratio(statistics.median(s.from_send for s in pushes),
                               statistics.median(s.from_send for s in samples))
        print(f"  push p50 / floor p50, {name}: {ratio} from the ack ({ratio_send} from the send)")
        verdicts.append(f"p50 <= 3x floor ({name}): {'MET' if met else 'MISSED'}")
    print(f"  target p99 < 1 s: {'MET' if _quantile([s.from_ack for s in pushes], 0.99) < 1 else 'MISSED'}; "
          f"target {'; '.join(verdicts)}")


if __name__ == "__main__":
    main()
