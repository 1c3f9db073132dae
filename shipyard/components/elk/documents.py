"""The shape of a log document, in one place: what the shipper writes (templates/logship), the
store's index template maps, and `make trace` / `make logs` read back. Pure data."""

from __future__ import annotations

import datetime as dt
from typing import Any

INDEX_PREFIX = "shipyard-logs-"

# Every document has these (keyword: exact match, aggregations).
COMMON = ("env", "host", "service", "component", "colour", "version", "stream", "format", "level")
# Taken from the platform's JSON lines (services/taskplatform/logs.py) when a line has them;
# the whole line is kept under "app", stored but not indexed (its keys vary by message).
APP_FIELDS = ("logger", "request_id", "task_id", "tenant", "route", "method", "status", "latency_ms",
              "attempt", "run_ms", "schedule_id", "consumer", "error")
# nginx's access lines (shipyard/components/edge/templates/nginx): remote address, request,
# status, body bytes, request time, then rid=... The groups, in order, become these fields.
ACCESS_PATTERN = r'^([^ ]+) "([A-Z]+) ([^ ]+) [^"]*" ([0-9]{3}) ([0-9]+) ([0-9.]+) rid=([^ ]+)'
ACCESS_FIELDS = ("client", "method", "path", "status", "bytes", "request_time_s", "request_id")
# The audit trail's events (shipyard.audit.AuditEvent; format "audit", service "audit"): these
# fields indexed, the whole event kept under "audit" (stored, not indexed).
AUDIT_FIELDS = ("command", "result", "user", "machine", "commit", "duration_s", "exit_code", "error")
# Services whose own lines are not shipped: they would feed back into what they ship or store.
NOT_SHIPPED = ("logship", "logs-setup", "elasticsearch")

_TYPES = {"status": "short", "latency_ms": "float", "run_ms": "float", "attempt": "short", "bytes": "long",
          "request_time_s": "float", "message": "text", "error": "text", "duration_s": "float", "exit_code": "short",
          "started": "double"}


def index_prefix(env: str) -> str:
    """Daily indices: <prefix><env>-YYYY-MM-DD."""
    return f"{INDEX_PREFIX}{env}-"


def index_pattern(env: str) -> str:
    return f"{index_prefix(env)}*"


def mappings() -> dict[str, Any]:
    """The documents' mapping: fields outside it are kept in _source and not indexed."""
    names = sorted({*COMMON, *APP_FIELDS, *ACCESS_FIELDS, *AUDIT_FIELDS, "message", "upstream", "audit_id", "started"})
    properties: dict[str, Any] = {"@timestamp": {"type": "date_nanos"}}
    properties.update({name: {"type": _TYPES.get(name, "keyword")} for name in names})
    properties["app"] = {"type": "object", "enabled": False}
    properties["audit"] = {"type": "object", "enabled": False}
    return {"dynamic": False, "properties": properties}


def index_template(env: str, replicas: int, lifecycle_policy: str | None) -> dict[str, Any]:
    """The composable index template (PUT _index_template/<name>) of the environment's indices."""
    settings: dict[str, Any] = {"number_of_shards": 1, "number_of_replicas": replicas}
    if lifecycle_policy:
        settings["index.lifecycle.name"] = lifecycle_policy
    return {"index_patterns": [index_pattern(env)], "priority": 200,
            "template": {"settings": settings, "mappings": mappings()},
            "_meta": {"managed_by": "shipyard", "env": env}}


def lifecycle_policy(retention_days: int) -> dict[str, Any]:
    """The ILM policy (PUT _ilm/policy/<name>): a daily index is deleted ``retention_days`` after
    it was created. No rollover: the index name carries the day."""
    return {"policy": {"phases": {"hot": {"min_age": "0ms", "actions": {}},
                                  "delete": {"min_age": f"{retention_days}d", "actions": {"delete": {}}}},
                       "_meta": {"managed_by": "shipyard"}}}


def rsyslog_string(text: str) -> str:
    """``text`` as the inside of a RainerScript string literal."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def unix_seconds(timestamp: str) -> float:
    """A document's @timestamp (the engine's RFC 3339 time, nanoseconds) as unix seconds."""
    whole, _, rest = timestamp.rstrip("Z").partition(".")
    base = dt.datetime.fromisoformat(whole).replace(tzinfo=dt.timezone.utc).timestamp()
    return base + (float("0." + rest) if rest else 0.0)
