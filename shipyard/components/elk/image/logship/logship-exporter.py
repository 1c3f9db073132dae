#!/usr/bin/env python3
"""logship-exporter: the shipper's own counters for Prometheus.

rsyslog 8.2302 (Debian bookworm) cannot write Prometheus's format itself (impstats gained
``format="prometheus"`` in 2025; 8.2302 refuses it: "impstats: invalid format prometheus").
So impstats writes JSON (``format="json"``, ``resetCounters="off"``) into a ruleset of its
own, whose one action is ``omprog`` running this program: each impstats record arrives on
stdin as one JSON line; the last one of each counter object is served at ``/metrics``.
rsyslog starts it, restarts it if it dies, and closes its stdin when it stops: it then exits.

Standard library only (Debian's python3); no state but the last records. What it serves:

- ``rsyslog_action_*{action}`` (origin core.action): processed, failed, suspended, resumed,
  suspended seconds;
- ``rsyslog_queue_*{queue}`` (core.queue): size, highest size, enqueued, full, discarded;
- ``rsyslog_omelasticsearch_*_total`` (the store's output): submitted, failed.http,
  failed.httprequests, failed.checkConn, failed.es...;
- ``rsyslog_cpu_*_seconds_total``, ``rsyslog_max_rss_bytes``, ``rsyslog_open_files`` (impstats'
  resource-usage); any other numeric counter as ``rsyslog_<origin>_<counter>{name}``;
- ``logship_stats_last_timestamp_seconds``: when the last record came (rsyslog alive and its
  queues moving: a stale value means a hung shipper);
- ``logship_buffer_bytes`` / ``logship_buffer_limit_bytes``: the disk part of the store's
  queue (its files in the work directory) and its bound (queue.maxDiskSpace);
- ``logship_queue_capacity{queue}``: the in-memory bound (queue.size) of an action's queue;
- ``logship_store_rejected_bytes``: the size of omelasticsearch's errorFile, where the documents
  the store answered with an error go (they are not in the store).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (metric, type, help) of each counter of an action and of a queue (rsyslog's names).
ACTION = {
    "processed": ("rsyslog_action_processed_total", "counter", "messages handed to the action"),
    "failed": ("rsyslog_action_failed_total", "counter", "messages the action gave up on"),
    "suspended": ("rsyslog_action_suspended_total", "counter", "times the action was suspended"),
    "suspended.duration": ("rsyslog_action_suspended_duration_seconds_total", "counter", "seconds spent suspended"),
    "resumed": ("rsyslog_action_resumed_total", "counter", "times the action resumed"),
}
QUEUE = {
    "size": ("rsyslog_queue_size", "gauge", "messages in the queue now"),
    "maxqsize": ("rsyslog_queue_max_size", "gauge", "most messages the queue held since the start"),
    "enqueued": ("rsyslog_queue_enqueued_total", "counter", "messages put in the queue"),
    "full": ("rsyslog_queue_full_total", "counter", "times the queue was full"),
    "discarded.full": ("rsyslog_queue_discarded_full_total", "counter", "messages discarded because the queue was full"),
    "discarded.nf": ("rsyslog_queue_discarded_nf_total", "counter", "messages discarded as the queue neared full"),
}
RESOURCES = {  # impstats' resource-usage: utime/stime in microseconds, maxrss in KiB
    "utime": ("rsyslog_cpu_user_seconds_total", "counter", "user CPU seconds of rsyslogd", lambda v: v / 1e6),
    "stime": ("rsyslog_cpu_system_seconds_total", "counter", "system CPU seconds of rsyslogd", lambda v: v / 1e6),
    "maxrss": ("rsyslog_max_rss_bytes", "gauge", "highest resident memory of rsyslogd", lambda v: v * 1024),
    "openfiles": ("rsyslog_open_files", "gauge", "files rsyslogd has open", lambda v: v),
}
# A DA queue's files in the work directory: <queue.filename>.<number> and <queue.filename>.qi.
_QUEUE_FILE = r"^{}\.([0-9]+|qi)$"


def _name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", text).lower()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def parse_record(line: str) -> dict | None:
    """One impstats JSON record (a line omprog hands over), or None for anything else."""
    try:
        record = json.loads(line.strip())
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("name"), str) or not isinstance(record.get("origin"), str):
        return None
    return record


def samples(record: dict):
    """(metric, type, help, labels, value) of each numeric counter of one record."""
    name, origin = record["name"], record["origin"]
    for key, raw in record.items():
        value = _number(raw)
        if value is None or key in ("name", "origin"):
            continue
        if origin == "core.action" and key in ACTION:
            yield (*ACTION[key], {"action": name}, value)
        elif origin == "core.queue" and key in QUEUE:
            yield (*QUEUE[key], {"queue": name}, value)
        elif origin == "impstats" and name == "resource-usage" and key in RESOURCES:
            metric, kind, text, scale = RESOURCES[key]
            yield metric, kind, text, {}, scale(value)
        elif origin == "omelasticsearch":
            yield (f"rsyslog_omelasticsearch_{_name(key)}_total", "counter",
                   f"omelasticsearch's {key} (every action of the module)", {}, value)
        else:
            yield f"rsyslog_{_name(origin)}_{_name(key)}", "gauge", f"impstats {origin} {key}", {"name": name}, value


def render(records: dict, last_record_at: float, buffer_bytes: float | None = None, buffer_limit: float | None = None,
           capacities: dict[str, int] | None = None, rejected_bytes: float | None = None) -> str:
    """The text format (0.0.4) of the last record of each counter object and the shipper's own figures."""
    families: dict[str, tuple[str, str, list[str]]] = {}

    def add(metric, kind, text, labels, value):
        family = families.setdefault(metric, (kind, text, []))
        inner = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels.items()))
        shown = str(int(value)) if float(value).is_integer() else repr(float(value))
        family[2].append(f"{metric}{{{inner}}} {shown}" if inner else f"{metric} {shown}")

    for key in sorted(records):
        for sample in samples(records[key]):
            add(*sample)
    add("logship_stats_last_timestamp_seconds", "gauge", "when the last impstats record came (0: none yet)", {},
        last_record_at)
    for queue, capacity in sorted((capacities or {}).items()):
        add("logship_queue_capacity", "gauge", "messages the queue holds in memory (queue.size)", {"queue": queue},
            capacity)
    if buffer_bytes is not None:
        add("logship_buffer_bytes", "gauge", "bytes of the store's queue on disk", {}, buffer_bytes)
    if buffer_limit is not None:
        add("logship_buffer_limit_bytes", "gauge", "the most the store's queue keeps on disk (queue.maxDiskSpace)", {},
            buffer_limit)
    if rejected_bytes is not None:
        add("logship_store_rejected_bytes", "gauge", "bytes of the documents the store refused (the errorFile)", {},
            rejected_bytes)
    out = []
    for metric, (kind, text, lines) in families.items():
        out += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}", *lines]
    return "\n".join(out) + "\n"


def file_bytes(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # nothing refused yet


def disk_buffer_bytes(directory: str, queue_file: str) -> int:
    """Bytes of a disk-assisted queue's files (0 when it has none: everything is in memory)."""
    pattern = re.compile(_QUEUE_FILE.format(re.escape(queue_file)))
    total = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for entry in names:
        if pattern.match(entry):
            try:
                total += os.stat(os.path.join(directory, entry)).st_size
            except OSError:
                pass  # deleted as the queue moved on
    return total


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.records: dict[tuple[str, str], dict] = {}
        self.last_record_at = 0.0

    def take(self, line: str) -> None:
        record = parse_record(line)
        if record is None:
            return
        with self.lock:
            self.records[(record["origin"], record["name"])] = record
            self.last_record_at = time.time()


def serve(stats: Stats, args) -> ThreadingHTTPServer:
    capacities = dict(c.split("=", 1) for c in args.capacity)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics")
                return
            with stats.lock:
                records, last = dict(stats.records), stats.last_record_at
            buffered = disk_buffer_bytes(args.work_dir, args.queue_file) if args.work_dir else None
            rejected = file_bytes(os.path.join(args.work_dir, args.rejected_file)) \
                if args.work_dir and args.rejected_file else None
            body = render(records, last, buffered, args.buffer_limit_bytes,
                          {f"{action} queue": int(size) for action, size in capacities.items()}, rejected).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):  # each scrape is not worth a line
            pass

    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default=":9104", help="[address]:port of /metrics (no address: every one)")
    parser.add_argument("--work-dir", help="rsyslog's work directory, where a disk-assisted queue keeps its files")
    parser.add_argument("--queue-file", default="store", help="the store action's queue.filename")
    parser.add_argument("--buffer-limit-bytes", type=float, help="the store action's queue.maxDiskSpace")
    parser.add_argument("--rejected-file", help="omelasticsearch's errorFile, in the work directory")
    parser.add_argument("--capacity", action="append", default=[], metavar="ACTION=SIZE",
                        help="an action's queue.size (its queue is named '<ACTION> queue')")
    args = parser.parse_args(argv)
    stats = Stats()
    server = serve(stats, args)
    for line in sys.stdin:  # until rsyslog closes the pipe
        stats.take(line)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
