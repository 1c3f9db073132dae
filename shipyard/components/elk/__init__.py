"""Central logs: a shipper on every host sends every container's log lines, parsed into the
fields of documents.py, to one store; `make trace` and `make logs` read them back from it.

- ``logship`` (every host): rsyslog from Debian, built on the host under every image source
  (templates/logship/rsyslog.conf.j2). It tails the engine's json-file logs (read-only bind
  mount of the engine's containers directory, root with only CAP_DAC_READ_SEARCH), so a
  container's stdout never waits for it; the labels it needs ride in each line's ``attrs``
  (the json-file ``labels`` option, set on every service by shipyard.render.compose).
- ``elasticsearch`` (the observability group): under ``official``, Elasticsearch from Elastic's
  image; under ``local`` a STAND-IN, osmem-server (in memory; Elasticsearch's HTTP API for
  _bulk, index templates and search; no security, no lifecycle policies, nothing survives a
  restart). docs/logs.md says what is verified how.
- ``logs-setup`` (one-shot, before the shippers): the index template of documents.py, and the
  lifecycle policy that deletes an index ``logs.retention_days`` after its day (official only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shipyard import audit
from shipyard.component import EVERY_HOST, Component, ConfigDir, Health, Image, LogStore, Port, Service, Wait
from shipyard.components.elk import documents, search
from shipyard.components.elk.settings import LogsSettings

STORE_PORT = 9200
STORE_UID = 1000  # elasticsearch, as in the official image (the stand-in is built to match)
ELASTICSEARCH_VERSION = "8.17.4"
OSMEM_VERSION = "0.1.6"
SHIPPER_CONF = "/etc/logship"
SETUP_CONF = "/etc/logs-setup"
LIFECYCLE_POLICY = "shipyard-logs"
# The engine's per-container log files, as the shipper sees them (read-only).
ENGINE_CONTAINERS = "/var/lib/docker/containers"
# The host's audit trail (shipyard.audit: one JSON line per command that changed the
# environment), as the shipper sees it (read-only): operator actions go to the store too.
AUDIT_TRAIL = "/var/log/shipyard/audit.log"


def runs(settings) -> bool:
    return settings.logs.enabled


def store_nodes(settings) -> int:
    """Elasticsearch nodes: as set under ``official``; the stand-in is one process."""
    if not runs(settings):
        return 0
    return settings.logs.elasticsearch.nodes if settings.images.source == "official" else 1


def _lifecycle(settings) -> bool:
    """Lifecycle policies exist in Elasticsearch, not in the stand-in."""
    return settings.images.source == "official"


def template_context(ctx) -> dict[str, Any]:
    logs: LogsSettings = ctx.section("logs")
    settings = ctx.settings
    stores = ctx.endpoints("elk", "elasticsearch")
    template = documents.index_template(ctx.env, replicas=1 if store_nodes(settings) > 1 else 0,
                                        lifecycle_policy=LIFECYCLE_POLICY if _lifecycle(settings) else None)
    return {
        "env": ctx.env, "host": ctx.host.name, "project": settings.compose_project,
        "servers": [f"http://{endpoint}" for endpoint in stores],
        "index_prefix": documents.index_prefix(ctx.env),
        "buffer_max_mb": logs.buffer_max_mb,
        "not_shipped": documents.NOT_SHIPPED,
        "app_fields": [f for f in documents.APP_FIELDS if f != "logger"],
        "audit_trail": AUDIT_TRAIL, "audit_fields": documents.AUDIT_FIELDS,
        "access_pattern": documents.rsyslog_string(documents.ACCESS_PATTERN),
        "credentials": None,
        "index_template_name": f"shipyard-logs-{ctx.env}",
        "index_template_json": json.dumps(template, indent=2, sort_keys=True),
        "index_pattern": documents.index_pattern(ctx.env),
        "mappings_json": json.dumps(documents.mappings(), indent=2, sort_keys=True),
        "lifecycle_policy_name": LIFECYCLE_POLICY if _lifecycle(settings) else None,
        "lifecycle_policy_json": json.dumps(documents.lifecycle_policy(logs.retention_days), indent=2, sort_keys=True),
        "setup_dir": SETUP_CONF,
        "store": f"http://{stores[0]}" if stores else "",
    }


def compose_service(ctx, inst) -> dict[str, Any]:
    logs: LogsSettings = ctx.section("logs")
    name = inst.service.name
    if name == "logship":
        return {
            "user": "0:0",
            # Root for the engine's 0640 files, with nothing of root but reading them.
            "cap_drop": ["ALL"], "cap_add": ["DAC_READ_SEARCH"],
            "security_opt": ["no-new-privileges:true"],
            "read_only": True,
            "volumes": [f"{ENGINE_CONTAINERS}:{ENGINE_CONTAINERS}:ro", "logship-state:/var/lib/rsyslog",
                        f"{audit.audit_log_path(ctx.settings.deploy_root, ctx.env)}:{AUDIT_TRAIL}:ro"],
            "mem_limit": f"{logs.shipper_memory_limit_mb}m",
        }
    if name == "logs-setup":
        return {"entrypoint": ["sh", f"{SETUP_CONF}/setup.sh"], "user": "65534:65534", "read_only": True,
                "tmpfs": ["/tmp"], "security_opt": ["no-new-privileges:true"], "cap_drop": ["ALL"]}
    # elasticsearch: the stand-in under local; it puts the index template back at each start.
    return {"mem_limit": f"{logs.stand_in_memory_limit_mb}m", "volumes": [f"./logs-setup:{SETUP_CONF}:ro"],
            "tmpfs": ["/tmp"]}


def _checks():
    from shipyard.components.elk import checks  # pytest: loaded by `make verify` only

    return checks


COMPONENT = Component(
    name="elk",
    folder=Path(__file__).parent,
    settings={"logs": LogsSettings},
    images=(
        Image("logship", local="shipyard/logship", build_context="shipyard/components/elk/image/logship"),
        Image("elasticsearch", official=f"docker.elastic.co/elasticsearch/elasticsearch:{ELASTICSEARCH_VERSION}",
              local=f"shipyard/logstore-osmem:{OSMEM_VERSION}", local_context="shipyard/components/elk/image/logstore",
              local_wheels=(f"osmem-server=={OSMEM_VERSION}",)),
    ),
    config_dirs=(ConfigDir("logship", SHIPPER_CONF), ConfigDir("logs-setup", SETUP_CONF)),
    services=(
        # The store is data: it converges with the data tier, before everything whose lines it keeps.
        Service("elasticsearch", "data", "observability", "elasticsearch", STORE_UID,
                port=Port(STORE_PORT, "elasticsearch_http", STORE_PORT, "loopback port of the log store's HTTP API", instance_offset=-1),
                # 401 counts as up: Elasticsearch with security answers it to a request without credentials.
                health=Health(("sh", "-c", f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{STORE_PORT}/ "
                                           "| grep -qE '^(200|401)'"), start_period_s=120),
                instances=store_nodes, placement="spread", scale=lambda s: 1 if runs(s) else 0),
        Service("logs-setup", "data", "observability", "logship", 65534, config_dir="logs-setup",
                one_shot=True, placement="once", serves_clients=False, waits=(Wait("elasticsearch"),),
                scale=lambda s: 1 if runs(s) else 0),
        Service("logship", "observability", EVERY_HOST, "logship", 0, config_dir="logship", serves_clients=False,
                # The store's address (on another host too) and its index template before the first line.
                waits=(Wait("elasticsearch"), Wait("logs-setup", "service_completed_successfully")),
                scale=lambda s: 1 if runs(s) else 0),
    ),
    compose_service=compose_service,
    template_context=template_context,
    checks=_checks,
    log_store=LogStore("elasticsearch", search_argv=search.search_argv, trace_query=search.trace_query,
                       line_of=search.line_of),
)
