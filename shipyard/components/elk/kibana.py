"""Kibana (official image source): its settings, and what its setup job puts into it through
Kibana's own APIs — a data view of the environment's log indices and saved searches, each with a
fixed id so that a second run replaces them instead of adding copies. Pure data, checked by
tests/unit/test_elk.py against the documented request shapes.

The password of ``kibana_system`` and the saved objects' encryption key are not in kibana.yml:
each is a secret file of its own in Kibana's YAML (templates/secrets/kibana-*.yml.j2), loaded
with a second and third ``--config`` (the serve command merges every ``--config`` it is given;
the image's kibana-docker passes its arguments on). Never in an environment variable, never in
the compose file.
"""

from __future__ import annotations

import json
from typing import Any

from shipyard.components.elk import documents

PORT = 5601
UID = 1000  # kibana, as in the official image
HOME = "/usr/share/kibana"
CONFIG = f"{HOME}/config/shipyard"  # the rendered kibana.yml, read-only
DATA_VIEW_ID = "shipyard-logs"
# Kibana's API: a request without it is refused (CSRF protection).
XSRF_HEADER = "kbn-xsrf: shipyard"


def settings(env: str, stores: list[str], store_ca: str) -> dict[str, Any]:
    """kibana.yml (https://www.elastic.co/guide/en/kibana/8.17/settings.html). ``stores``: the
    nodes' HTTPS URLs; ``store_ca``: the file of the CA that issued their certificate."""
    return {
        "server.name": f"shipyard-{env}",
        "server.host": "0.0.0.0",
        "server.port": PORT,
        "elasticsearch.hosts": stores,
        # The node's certificate checked against the CA that issued it, and its name against the host's.
        "elasticsearch.ssl.certificateAuthorities": [store_ca],
        "elasticsearch.ssl.verificationMode": "full",
        "elasticsearch.username": "kibana_system",
        # The health probe reads /api/status without credentials: 200 when available, 503 not.
        "status.allowAnonymous": True,
        # No call home: telemetry and the newsfeed reach the internet.
        "telemetry.optIn": False,
        "telemetry.allowChangingOptInStatus": False,
        "newsfeed.enabled": False,
    }


def data_view(env: str) -> dict[str, Any]:
    """``POST /api/data_views/data_view``
    (https://www.elastic.co/guide/en/kibana/8.17/data-views-api-create.html): ``override``
    replaces one of the same title, and the id is fixed."""
    return {"override": True, "data_view": {
        "id": DATA_VIEW_ID, "title": documents.index_pattern(env), "name": f"Shipyard logs ({env})",
        "timeFieldName": "@timestamp"}}


# (id, title, KQL query, columns): the saved searches of docs/logs.md.
SEARCHES = (
    ("shipyard-errors", "Errors", "level:error or level:critical",
     ("host", "service", "level", "logger", "message", "error", "request_id")),
    ("shipyard-one-request", "One request (set request_id)", "request_id:*",
     ("host", "service", "format", "status", "latency_ms", "message", "task_id")),
    ("shipyard-server-errors", "Access logs: status >= 500", "format:access and status >= 500",
     ("host", "service", "method", "path", "status", "request_time_s", "request_id", "upstream")),
)


def saved_search(env: str, title: str, query: str, columns: tuple[str, ...]) -> dict[str, Any]:
    """The body of ``POST /api/saved_objects/search/<id>?overwrite=true``
    (https://www.elastic.co/guide/en/kibana/8.17/saved-objects-api-create.html): a Discover
    search on the data view, referenced by name as saved objects do."""
    source = {"query": {"query": query, "language": "kuery"}, "filter": [],
              "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
    return {"attributes": {"title": f"{title} ({env})", "description": "Made by Shipyard's kibana-setup; "
                           "a re-run replaces it (save a copy to change it).",
                           "columns": list(columns), "sort": [["@timestamp", "desc"]],
                           "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source, sort_keys=True)}},
            "references": [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern",
                            "id": DATA_VIEW_ID}]}


def requests(env: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, body) of every request the setup job sends, in order."""
    found = [("POST", "/api/data_views/data_view", data_view(env))]
    found += [("POST", f"/api/saved_objects/search/{sid}?overwrite=true", saved_search(env, title, query, columns))
              for sid, title, query, columns in SEARCHES]
    return found
