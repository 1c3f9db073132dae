"""Logstash between the shippers and the store (``logs.logstash.enabled``, official image source).

The shippers still parse every line (templates/logship/rsyslog.conf.j2: the same in every
environment, and what the e2e tests check); Logstash adds a persistent queue on disk in front of
Elasticsearch, so a store that is away or slow fills Logstash's queue before the shippers' own
buffers. Its pipeline (templates/logstash/shipyard.conf.j2) takes the shippers' documents as
JSON lines over TCP, moves the id the shipper made into ``@metadata`` and writes each document
to the daily index of its own date, with that id (a line shipped twice is stored once).

The output's password is not in the reviewed pipeline: the output section is a secret file
(templates/secrets/logstash-output.conf.j2) in the service's secrets folder, mounted at
``SECRETS``; Logstash reads both as one pipeline (``-f`` with a glob over the two folders).
"""

from __future__ import annotations

from typing import Any

PORT = 5000  # the TCP input the shippers send to
API_PORT = 9600
UID = 1000  # logstash, as in the official image
HOME = "/usr/share/logstash"
PIPELINE = f"{HOME}/pipeline"  # the rendered pipeline (config dir, read-only)
SECRETS = f"{HOME}/pipeline-secrets"  # the output section with the password (secrets folder)
# Both folders' *.conf, concatenated in order of their paths, make the one pipeline.
PIPELINE_GLOB = f"{HOME}/pipeline*/*.conf"
DATA = f"{HOME}/data"  # the persistent queue lives in path.data/queue
ID_FIELD = "shipyard_id"  # what the shipper adds in front of Logstash; moved into @metadata


def settings(queue_max_mb: int) -> dict[str, Any]:
    """logstash.yml (https://www.elastic.co/guide/en/logstash/8.17/logstash-settings-file.html)."""
    return {
        "api.http.host": "127.0.0.1",  # the health probe's; nothing else reads the API
        "api.http.port": API_PORT,
        # The documents are shaped by the shipper (documents.py): no ECS fields are added.
        "pipeline.ecs_compatibility": "disabled",
        "queue.type": "persisted",
        "queue.max_bytes": f"{queue_max_mb}mb",
        "xpack.monitoring.enabled": False,
        "log.format": "json",
    }
