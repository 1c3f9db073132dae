"""Central logs: a shipper on every host sends every container's log lines, parsed into the
fields of documents.py, to one store; `make trace` and `make logs` read them back from it.

- ``logship`` (every host): rsyslog from Debian, built on the host under every image source
  (templates/logship/rsyslog.conf.j2). It tails the engine's json-file logs (read-only bind
  mount of the engine's containers directory, root with only CAP_DAC_READ_SEARCH), so a
  container's stdout never waits for it; the labels it needs ride in each line's ``attrs``
  (the json-file ``labels`` option, set on every service by shipyard.render.compose).
- ``elasticsearch-N`` (the observability group): under ``official``, Elasticsearch from Elastic's
  image, 1 or 3 nodes, security on, transport and HTTP TLS from the deploy (elasticsearch.py;
  every client checks the HTTP certificate against the CA that issued it); under
  ``local`` a STAND-IN, osmem-server (in memory; Elasticsearch's HTTP API for _bulk, index
  templates and search; no security, no lifecycle policies, nothing survives a restart).
- ``logs-setup`` (one-shot, before the shippers): the index template of documents.py; under
  ``official`` also the lifecycle policy that deletes an index ``logs.retention_days`` after its
  day, and the roles, users and every password of security.py, set at each run.
- ``official`` only: ``kibana`` with ``kibana-setup`` (its data view and saved searches:
  kibana.py), and with ``logs.logstash.enabled`` ``logstash`` between the shippers and the store
  (logstash.py). docs/logs.md says what is verified how.
"""


from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from shipyard import audit, yamltext
from shipyard.component import (EVERY_HOST, Component, ConfigDir, Health, HostSysctl, Image, LogStore, Metrics,
                                PeerPort, Port, Rotation, SecretFile, Service, Wait)
from shipyard.components.elk import documents, elasticsearch, kibana, logstash, search, security
from shipyard.components.elk.settings import LogsSettings

STORE_PORT = elasticsearch.HTTP_PORT
STORE_UID = elasticsearch.UID  # elasticsearch, as in the official image (the stand-in is built to match)
# Elasticsearch, Kibana and Logstash run the same version (Elastic's images of one release).
ELASTICSEARCH_VERSION = "8.17.4"
OSMEM_VERSION = "0.1.6"
SHIPPER_CONF = "/etc/logship"
SETUP_CONF = "/etc/logs-setup"
KIBANA_SETUP_CONF = "/etc/kibana-setup"
LIFECYCLE_POLICY = "shipyard-logs"
# The engine's per-container log files, as the shipper sees them (read-only).
ENGINE_CONTAINERS = "/var/lib/docker/containers"
# The host's audit trail (shipyard.audit: one JSON line per command that changed the
# environment), as the shipper sees it (read-only): operator actions go to the store too.
AUDIT_TRAIL = "/var/log/shipyard/audit.log"
# Where the setup jobs and the shipper find their passwords (the default secrets mount).
RUN_SECRETS = "/run/secrets"
NOBODY = 65534
# The shipper's counters (impstats, served by image/logship/logship-exporter.py): port, and the
# store action's in-memory queue (queue.size; beyond it the queue spills to disk).
SHIPPER_METRICS_PORT = 9104
SHIPPER_QUEUE_SIZE = 5000


def runs(settings) -> bool:
    return settings.logs.enabled


def official(settings) -> bool:
    """Elastic's own images: Elasticsearch with security, Kibana, Logstash. Under ``local`` the
    store is the stand-in, without users; none of the rest runs."""
    return runs(settings) and settings.images.source == "official"


def kibana_runs(settings) -> bool:
    return official(settings) and settings.logs.kibana.enabled


def logstash_runs(settings) -> bool:
    return official(settings) and settings.logs.logstash.enabled


def _writes_to_store(settings) -> bool:
    """The shippers write to Elasticsearch themselves (as ``logship``): no Logstash between."""
    return official(settings) and not settings.logs.logstash.enabled


def store_nodes(settings) -> int:
    """Elasticsearch nodes: as set under ``official``; the stand-in is one process."""
    if not runs(settings):
        return 0
    return settings.logs.elasticsearch.nodes if settings.images.source == "official" else 1


def _store_url(settings, address: str) -> str:
    """The store's URL at ``address``: HTTPS under the official image source (security on, every
    client logs in with a password); the stand-in speaks plain HTTP and has no users."""
    return f"{'https' if official(settings) else 'http'}://{address}"


def _lifecycle(settings) -> bool:
    """Lifecycle policies exist in Elasticsearch, not in the stand-in."""
    return settings.images.source == "official"


def _yaml(doc: dict[str, Any]) -> str:
    return yamltext.dump(doc).rstrip("\n")


def _setup_users(settings) -> list[dict[str, str]]:
    """What the setup script needs of each user: name, secret file, request path, body."""
    found = []
    for user in security.users(settings.logs.logstash.enabled):
        path = f"/_security/user/{user.name}" + ("/_password" if user.role is None else "")
        found.append({"name": user.name, "file": f"{RUN_SECRETS}/{user.secret}", "method": "POST" if user.role is None
                      else "PUT", "path": path, "body": security.user_body(user)})
    return found


def _security_context(ctx) -> dict[str, Any]:
    """The official image source's part of the templates' variables (users, Kibana, Logstash)."""
    settings, logs = ctx.settings, ctx.section("logs")
    stores = [_store_url(settings, e) for e in ctx.endpoints("elk", "elasticsearch")]
    # Kibana's setup job runs beside it (both on the group's first host): reached by name.
    kibanas = [ctx.address(i) for i in ctx.instances_of("elk", "kibana") if i.host.name == ctx.host.name]
    collectors = ctx.endpoints("elk", "logstash") if logstash_runs(settings) else ()
    return {
        "roles": [(name, json.dumps(body, sort_keys=True)) for name, body in
                  security.roles(ctx.env, logs.logstash.enabled).items()],
        "users": _setup_users(settings),
        "elastic_file": f"{RUN_SECRETS}/{security.users(False)[0].secret}",
        "kibana_yml": _yaml(kibana.settings(ctx.env, stores, f"{RUN_SECRETS}/{elasticsearch.CLIENT_CA}")),
        "kibana": f"http://{kibanas[0]}" if kibanas else "",
        "kibana_ready_timeout_s": logs.kibana.ready_timeout_s,
        "kibana_requests": [(method, path, json.dumps(body, sort_keys=True))
                            for method, path, body in kibana.requests(ctx.env)],
        "xsrf_header": kibana.XSRF_HEADER,
        "logstash_yml": _yaml(logstash.settings(logs.logstash.queue_max_mb)),
        "logstash_port": logstash.PORT, "logstash_secrets": logstash.SECRETS, "id_field": logstash.ID_FIELD,
        "logstash": {"host": collectors[0].host, "port": collectors[0].port, "peer": logstash.SERVER_NAME,
                     "ca": logstash.SHIPPER_CA, "cert": logstash.SHIPPER_CERT, "key": logstash.SHIPPER_KEY}
        if collectors else None,
        "logstash_input_ssl": logstash.option_lines(logstash.input_ssl()),
        "logstash_output_ssl": logstash.option_lines(logstash.output_ssl()),
    }


def template_context(ctx) -> dict[str, Any]:
    logs: LogsSettings = ctx.section("logs")
    settings = ctx.settings
    stores = ctx.endpoints("elk", "elasticsearch")
    template = documents.index_template(ctx.env, replicas=1 if store_nodes(settings) > 1 else 0,
                                        lifecycle_policy=LIFECYCLE_POLICY if _lifecycle(settings) else None)
    return {
        "env": ctx.env, "host": ctx.host.name, "project": settings.compose_project,
        "servers": [_store_url(settings, endpoint) for endpoint in stores],
        "index_prefix": documents.index_prefix(ctx.env),
        "buffer_max_mb": logs.buffer_max_mb,
        "stats_interval_s": logs.stats_interval_s, "metrics_port": SHIPPER_METRICS_PORT,
        "queue_size": SHIPPER_QUEUE_SIZE, "resume_interval_max_s": logs.store_retry_max_s,
        "store_action": "logstash" if logstash_runs(settings) else "store",
        # Logstash's own lines would go through Logstash again.
        "not_shipped": documents.NOT_SHIPPED + (("logstash",) if logstash_runs(settings) else ()),
        "app_fields": [f for f in documents.APP_FIELDS if f != "logger"],
        "audit_trail": AUDIT_TRAIL, "audit_fields": documents.AUDIT_FIELDS,
        "access_pattern": documents.rsyslog_string(documents.ACCESS_PATTERN),
        "credentials": {"user": "logship", "password_file": f"{RUN_SECRETS}/logship_password"}
        if _writes_to_store(settings) else None,
        "index_template_name": f"shipyard-logs-{ctx.env}",
        "index_template_json": json.dumps(template, indent=2, sort_keys=True),
        "index_pattern": documents.index_pattern(ctx.env),
        "mappings_json": json.dumps(documents.mappings(), indent=2, sort_keys=True),
        "lifecycle_policy_name": LIFECYCLE_POLICY if _lifecycle(settings) else None,
        "lifecycle_policy_json": json.dumps(documents.lifecycle_policy(logs.retention_days), indent=2, sort_keys=True),
        "setup_dir": SETUP_CONF,
        "store": _store_url(settings, stores[0]) if stores else "",
        # The store's CA certificate, for its clients in this folder (official image source only).
        "store_ca": f"{RUN_SECRETS}/{elasticsearch.CLIENT_CA}" if official(settings) else None,
        "security": official(settings),
        "pem_block": elasticsearch.pem_block,
        **(_security_context(ctx) if official(settings) else {"logstash": None}),
    }


def _one_shot(script: str) -> dict[str, Any]:
    """A setup job: its script, as nobody, nothing writable but /tmp."""
    return {"entrypoint": ["sh", script], "user": f"{NOBODY}:{NOBODY}", "read_only": True,
            "tmpfs": ["/tmp"], "security_opt": ["no-new-privileges:true"], "cap_drop": ["ALL"]}


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
        return _one_shot(f"{SETUP_CONF}/setup.sh")
    if name == "kibana-setup":
        return _one_shot(f"{KIBANA_SETUP_CONF}/setup.sh")
    if name == "kibana":
        # The image's entrypoint (tini) runs this; kibana-docker hands its arguments to Kibana.
        return {"command": ["/usr/local/bin/kibana-docker", "--config", f"{kibana.CONFIG}/kibana.yml",
                            "--config", f"{RUN_SECRETS}/kibana-password.yml",
                            "--config", f"{RUN_SECRETS}/kibana-encryption-key.yml"],
                "volumes": ["kibana-data:/usr/share/kibana/data"], "mem_limit": f"{logs.kibana.memory_limit_mb}m"}
    if name == "logstash":
        return {"command": ["-f", logstash.PIPELINE_GLOB],
                "environment": {"LS_JAVA_OPTS": f"-Xms{logs.logstash.heap_mb}m -Xmx{logs.logstash.heap_mb}m"},
                "volumes": ["./logstash/logstash.yml:/usr/share/logstash/config/logstash.yml:ro",
                            f"logstash-data:{logstash.DATA}"],
                "mem_limit": f"{logs.logstash.memory_limit_mb}m"}
    if official(ctx.settings):
        return elasticsearch.compose(ctx, inst, logs)
    # elasticsearch: the stand-in under local; it puts the index template back at each start.
    # It holds every document in memory (about 9 KB each here): its Go runtime collects harder
    # as it nears three quarters of the container's limit, rather than being killed at it.
    return {"mem_limit": f"{logs.stand_in_memory_limit_mb}m", "volumes": [f"./logs-setup:{SETUP_CONF}:ro"],
            "tmpfs": ["/tmp"], "environment": {"GOMEMLIMIT": f"{logs.stand_in_memory_limit_mb * 3 // 4}MiB"}}


def _checks():
    from shipyard.components.elk import checks  # pytest: loaded by `make verify` only

    return checks


def _store_sysctls(settings) -> tuple[HostSysctl, ...]:
    # Elasticsearch maps its index files: fewer map areas than this fail its bootstrap checks.
    return (HostSysctl("vm.max_map_count", elasticsearch.MAX_MAP_COUNT, "Elasticsearch's memory-mapped index files"),) \
        if official(settings) else ()


def _transport_tls(repo: Path, env: str, environ: dict[str, str] | None) -> str:
    return elasticsearch.transport_bundle(repo, env, environ)


def _store_health(settings) -> Health:
    """The store answers on its HTTP port: under the official image source over HTTPS, its
    certificate checked against its CA and its loopback address (the certificate names it); 401
    counts as up (Elasticsearch with security answers it to a request without credentials)."""
    tls = f"--cacert {elasticsearch.HTTP_CA} " if official(settings) else ""
    return Health(("sh", "-c", f"curl -s -o /dev/null -w '%{{http_code}}' {tls}"
                               f"{_store_url(settings, f'127.0.0.1:{STORE_PORT}')}/ | grep -qE '^(200|401)'"),
                  start_period_s=120)


def _password(user: str, **more) -> SecretFile:
    """The password file of a user of the store (official image source only)."""
    return SecretFile(f"{user}_password", f"{user}_password", when=more.pop("when", official), **more)


_TLS = elasticsearch.TRANSPORT_TLS
_HTTP_TLS = elasticsearch.HTTP_TLS


def _store_ca(when) -> SecretFile:
    """The store's CA certificate for one of its clients (from the HTTP bundle: that part only).
    Read at start: a rotation of the HTTP certificate recreates the clients too (the CA itself
    stays the same)."""
    return SecretFile(elasticsearch.CLIENT_CA, _HTTP_TLS, template="secrets/store-ca.pem.j2", when=when)


_STORE_SECRETS = (
    # Read by the image's entrypoint at a first start only (the bootstrap password): a rotation
    # is the setup job's to apply, the nodes are not recreated for it.
    _password("elastic", rotation=Rotation()),
    # `make trace` and `make verify` read the store from inside a node, as the read-only user
    # (search.py): read from the file at each search, so a rotation needs nothing run.
    _password("logs_reader", rotation=Rotation()),
    SecretFile("transport.key", _TLS, template="secrets/transport-key.pem.j2", when=official),
    SecretFile("transport.crt", _TLS, template="secrets/transport-cert.pem.j2", when=official),
    SecretFile("transport-ca.crt", _TLS, template="secrets/transport-ca.pem.j2", when=official),
    # The HTTP layer's key and certificate, and the CA's certificate for its own probe and `make trace`.
    SecretFile(Path(elasticsearch.HTTP_KEY).name, _HTTP_TLS, template="secrets/http-key.pem.j2", when=official),
    SecretFile(Path(elasticsearch.HTTP_CERT).name, _HTTP_TLS, template="secrets/http-cert.pem.j2", when=official),
    SecretFile(Path(elasticsearch.HTTP_CA).name, _HTTP_TLS, template="secrets/store-ca.pem.j2", when=official),
)
_SETUP_SECRETS = (
    # It logs in as elastic: during a rotation with the value it replaces too, until it set the new one.
    _password("elastic", keep_previous=True),
    _password("kibana_system"), _password("logship"), _password("logs_reader"),
    _password("logstash_writer", when=logstash_runs),
    _store_ca(official),
)
_KIBANA_SECRETS = (
    SecretFile("kibana-password.yml", "kibana_system_password", template="secrets/kibana-password.yml.j2", when=official),
    SecretFile("kibana-encryption-key.yml", "kibana_encryption_key", template="secrets/kibana-encryption-key.yml.j2",
               when=official),
    _store_ca(official),
)
_ES_IMAGE = "docker.elastic.co/elasticsearch/elasticsearch"
# Mutual TLS between the shippers and Logstash's input (logstash.py): each side's key and
# certificate, and the log shipping CA's certificate it checks the other's against.
_LOGSTASH_INPUT_TLS = tuple(
    SecretFile(Path(path).name, logstash.INPUT_TLS, template=f"secrets/logstash-input-{part}.pem.j2", when=logstash_runs)
    for path, part in ((logstash.INPUT_KEY, "key"), (logstash.INPUT_CERT, "cert"), (logstash.INPUT_CA, "ca")))
_SHIPPER_TLS = tuple(
    SecretFile(Path(path).name, logstash.SHIPPER_TLS, template=f"secrets/logship-client-{part}.pem.j2",
               when=logstash_runs)
    for path, part in ((logstash.SHIPPER_KEY, "key"), (logstash.SHIPPER_CERT, "cert"), (logstash.SHIPPER_CA, "ca")))


COMPONENT = Component(
    name="elk",
    folder=Path(__file__).parent,
    settings={"logs": LogsSettings},
    images=(
        Image("logship", local="shipyard/logship", build_context="shipyard/components/elk/image/logship"),
        Image("elasticsearch", official=f"{_ES_IMAGE}:{ELASTICSEARCH_VERSION}",
              local=f"shipyard/logstore-osmem:{OSMEM_VERSION}", local_context="shipyard/components/elk/image/logstore",
              local_wheels=(f"osmem-server=={OSMEM_VERSION}",)),
        # No local recipe: neither is packaged by Debian. Their services run under `official` only.
        Image("kibana", official=f"docker.elastic.co/kibana/kibana:{ELASTICSEARCH_VERSION}"),
        Image("logstash", official=f"docker.elastic.co/logstash/logstash:{ELASTICSEARCH_VERSION}"),
    ),
    config_dirs=(ConfigDir("logship", SHIPPER_CONF), ConfigDir("logs-setup", SETUP_CONF),
                 ConfigDir("kibana", kibana.CONFIG), ConfigDir("kibana-setup", KIBANA_SETUP_CONF),
                 ConfigDir("logstash", logstash.PIPELINE)),
    services=(
        # The store is data: it converges with the data tier, before everything whose lines it keeps.
        Service("elasticsearch", "data", "observability", "elasticsearch", STORE_UID,
                port=Port(STORE_PORT, "elasticsearch_http", STORE_PORT, "loopback port of the log store's HTTP API", instance_offset=-1),
                # The transport layer, among the nodes: published only once they span hosts.
                peer_ports=(PeerPort(elasticsearch.TRANSPORT_PORT, ("tcp",), "Elasticsearch's transport (TLS)"),),
                health=_store_health,
                secrets=_STORE_SECRETS, secrets_mount=elasticsearch.SECRETS, host_sysctls=_store_sysctls,
                instances=store_nodes, placement="spread", scale=lambda s: 1 if runs(s) else 0),
        Service("logs-setup", "data", "observability", "logship", NOBODY, config_dir="logs-setup",
                one_shot=True, placement="once", serves_clients=False, waits=(Wait("elasticsearch"),),
                secrets=_SETUP_SECRETS, scale=lambda s: 1 if runs(s) else 0),
        # Between the shippers and the store (logs.logstash.enabled): data, so it is up before them.
        Service("logstash", "data", "observability", "logstash", logstash.UID, config_dir="logstash",
                port=Port(logstash.PORT, "logstash_tcp", logstash.PORT, "loopback port of Logstash's input for the "
                                                                      "shippers (official image source, logs.logstash)"),
                secrets=(SecretFile("output.conf", "logstash_writer_password",
                                    template="secrets/logstash-output.conf.j2", when=logstash_runs),
                         *_LOGSTASH_INPUT_TLS, _store_ca(logstash_runs)),
                secrets_mount=logstash.SECRETS,
                health=Health(("sh", "-c", f"curl -s http://127.0.0.1:{logstash.API_PORT}/_node/pipelines "
                                           "| grep -q '\"main\"'"), start_period_s=180),
                # Its writer user and password exist once the setup job ran.
                waits=(Wait("elasticsearch"), Wait("logs-setup", "service_completed_successfully")),
                placement="once", scale=lambda s: 1 if logstash_runs(s) else 0),
        Service("logship", "observability", EVERY_HOST, "logship", 0, config_dir="logship", serves_clients=False,
                secrets=(_password("logship", when=_writes_to_store), _store_ca(_writes_to_store), *_SHIPPER_TLS),
                # impstats' counters, served by the exporter rsyslog runs (omprog): scraped on the
                # project network, published nowhere.
                metrics=Metrics(SHIPPER_METRICS_PORT),
                # The store's address (on another host too) and its index template before the first line.
                waits=(Wait("elasticsearch"), Wait("logs-setup", "service_completed_successfully"), Wait("logstash")),
                scale=lambda s: 1 if runs(s) else 0),
        Service("kibana", "observability", "observability", "kibana", kibana.UID, config_dir="kibana",
                port=Port(kibana.PORT, "kibana_http", kibana.PORT, "loopback port of Kibana (official image source only)"),
                secrets=_KIBANA_SECRETS,
                # 200 once Kibana is available, 503 while it is not ("Kibana server is not ready yet").
                health=Health(("curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{kibana.PORT}/api/status"),
                              start_period_s=300),
                # kibana_system's password is the setup job's.
                waits=(Wait("elasticsearch"), Wait("logs-setup", "service_completed_successfully")),
                placement="once", scale=lambda s: 1 if kibana_runs(s) else 0),
        Service("kibana-setup", "observability", "observability", "logship", NOBODY, config_dir="kibana-setup",
                one_shot=True, placement="once", serves_clients=False, waits=(Wait("kibana"),),
                secrets=(_password("elastic"),), scale=lambda s: 1 if kibana_runs(s) else 0),
    ),
    compose_service=compose_service,
    template_context=template_context,
    held_secrets=(elasticsearch.CA_CERT, elasticsearch.CA_KEY, logstash.LOGS_CA_CERT, logstash.LOGS_CA_KEY),
    issued_secrets={_TLS: _transport_tls, _HTTP_TLS: elasticsearch.http_bundle,
                    logstash.INPUT_TLS: logstash.input_bundle, logstash.SHIPPER_TLS: logstash.client_bundle},
    checks=_checks,
    log_store=LogStore("elasticsearch", search_argv=search.search_argv, trace_query=search.trace_query,
                       line_of=search.line_of),
)
