"""Reading lines back from the store (Component.log_store): the searches `make trace` runs,
inside the store's own container with its own client, and the lines they give back."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from shipyard.components.elk import documents, elasticsearch

STORE_ADDRESS = "127.0.0.1:9200"  # the store's own container: loopback (its certificate names it)
READER_SECRET = "logs_reader_password"
READER_USER = "logs_reader"
# A trace is a handful of requests and tasks; more lines than this are cut (the newest kept out).
MAX_LINES = 10000


def _iso(unix_s: float) -> str:
    return dt.datetime.fromtimestamp(unix_s, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def trace_query(settings, request_ids: frozenset[str], task_ids: frozenset[str], since: float) -> dict[str, Any]:
    """Every line carrying one of the ids, logged since ``since``, oldest first."""
    should = [{"terms": {field: sorted(ids)}} for field, ids in (("request_id", request_ids), ("task_id", task_ids)) if ids]
    return {"size": MAX_LINES, "sort": [{"@timestamp": "asc"}],
            "query": {"bool": {"filter": [{"range": {"@timestamp": {"gte": _iso(since)}}}],
                               "should": should, "minimum_should_match": 1}}}


def read_argv(settings, path: str, body: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """curl in the store's container reading ``path`` (a POST of ``body`` when given): the
    stand-in answers without credentials; Elasticsearch (official images) as the read-only user,
    its password read from its file inside the container, so it is never on a command line the
    deploying machine sees."""
    if settings.images.source != "official":
        request: tuple[str, ...] = ("curl", "-sS", "--fail-with-body", f"http://{STORE_ADDRESS}{path}")
    else:
        # HTTPS, the node's certificate checked against its CA (a file of its secrets folder).
        request = ("curl", "-sS", "--fail-with-body", "--cacert", elasticsearch.HTTP_CA,
                   f"https://{STORE_ADDRESS}{path}")
    if body is not None:
        request += ("-H", "Content-Type: application/json", "--data-binary", json.dumps(body, sort_keys=True))
    if settings.images.source != "official":
        return request
    return ("sh", "-c", f'exec "$@" -u "{READER_USER}:$(cat {elasticsearch.SECRETS}/{READER_SECRET})"', "read",
            *request)


def search_argv(settings, body: Mapping[str, Any]) -> tuple[str, ...]:
    """A search of the environment's indices (Component.log_store)."""
    return read_argv(settings, f"/{documents.index_pattern(settings.name)}/_search?ignore_unavailable=true", body)


def line_of(hit: Mapping[str, Any]) -> tuple[str, float, str]:
    """(where, unix seconds, the line as the container wrote it) of one hit: a platform line
    comes back as its JSON (kept whole under "app"), any other as its text."""
    doc = hit["_source"]
    when = documents.unix_seconds(doc["@timestamp"])
    text = json.dumps(doc["app"]) if doc.get("format") == "app" and isinstance(doc.get("app"), dict) else doc.get("message", "")
    return f"{doc.get('host', '?')} {doc.get('service', '?')}", when, text
