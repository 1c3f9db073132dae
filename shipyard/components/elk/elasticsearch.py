"""Elasticsearch under the official image source: each node's settings, as the image takes them
from its environment (a variable whose name is the setting's:
https://www.elastic.co/guide/en/elasticsearch/reference/8.17/docker.html#docker-configuration-methods),
and its transport TLS.

- One node (``logs.elasticsearch.nodes: 1``): ``discovery.type: single-node`` — it elects itself
  and never looks for others.
- Three nodes: ``cluster.initial_master_nodes`` names all three (the first election only),
  ``discovery.seed_hosts`` the other two at their transport port; on one host they meet on the
  project network by name, across hosts at their host's private address (the topology's peer
  address; the transport port is then published there, ``transport.publish_host`` says so).
- Security on (``xpack.security.enabled``). With more than one node Elasticsearch requires TLS on
  the transport layer; it is on for one node too, so both run the same settings. The node
  certificate (key, certificate, environment CA) is the secret ``elasticsearch_transport_tls``,
  issued by the deploy from a CA only the deploying machine holds (``transport_bundle``).
  ``verification_mode: certificate``: a peer must hold a certificate from that CA (the CA signs
  nothing else); host names are not checked, since peers on one host connect to container
  addresses no certificate can name ahead of time.
- HTTP over TLS (``xpack.security.http.ssl``): every client logs in with a password (basic
  auth), so the API — on the project network, published on loopback or, for shippers on other
  hosts, on the host's private address — never carries one in clear. The certificate is the
  secret ``elasticsearch_http_tls``, issued by the deploy from the environment's log shipping CA
  (held on the deploying machine: logstash.LOGS_CA_CERT) and naming every node as its clients
  reach it (``http_bundle``); each client is given that CA's certificate (``CLIENT_CA``) and
  checks the node's name against it. Not the transport CA: the nodes' transport trusts every
  certificate that CA signs (``verification_mode: certificate``), so it signs nothing else.
- Elasticsearch reads TLS files only below its config directory (its security manager refuses
  others), so its secrets folder is mounted at ``SECRETS`` there instead of /run/secrets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HOME = "/usr/share/elasticsearch"
SECRETS = f"{HOME}/config/shipyard-secrets"
DATA = f"{HOME}/data"
HTTP_PORT = 9200
TRANSPORT_PORT = 9300
UID = 1000  # elasticsearch, as in the official image
TRANSPORT_TLS = "elasticsearch_transport_tls"
CA_CERT, CA_KEY = "elasticsearch_ca_cert", "elasticsearch_ca_key"
HTTP_TLS = "elasticsearch_http_tls"  # the HTTP layer's key, certificate and its CA's certificate (PEM)
# The node's HTTP files, in its secrets folder; CA_FILE also for its own probe and `make trace`.
HTTP_KEY, HTTP_CERT, HTTP_CA = f"{SECRETS}/http.key", f"{SECRETS}/http.crt", f"{SECRETS}/http-ca.crt"
# What every other client of the store is given, in its secrets folder: the CA's certificate only.
CLIENT_CA = "store-ca.crt"
# https://www.elastic.co/guide/en/elasticsearch/reference/8.17/docker.html (production: the
# kernel setting the bootstrap checks want at least 262144; Elastic's current page asks 1048576).
MAX_MAP_COUNT = 1048576


def cluster_settings(env: str, name: str, nodes: tuple[str, ...], seeds: tuple[str, ...],
                     publish: str | None) -> dict[str, str]:
    """Discovery and identity. ``nodes``: every node's name; ``seeds``: the other nodes'
    transport addresses; ``publish``: this node's host address when the nodes span hosts."""
    # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/modules-discovery-settings.html
    # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/important-settings.html
    found = {"cluster.name": f"shipyard-{env}", "node.name": name, "network.host": "0.0.0.0",
             "transport.port": str(TRANSPORT_PORT), "http.port": str(HTTP_PORT)}
    if len(nodes) == 1:
        found["discovery.type"] = "single-node"
    else:
        found["discovery.seed_hosts"] = ",".join(seeds)
        found["cluster.initial_master_nodes"] = ",".join(nodes)
    if publish:
        # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/modules-network.html
        found["transport.publish_host"] = publish
        found["transport.publish_port"] = str(TRANSPORT_PORT)
    return found


def security_settings() -> dict[str, str]:
    """Security and TLS. https://www.elastic.co/guide/en/elasticsearch/reference/8.17/security-settings.html"""
    return {
        "xpack.security.enabled": "true",
        # Nothing enrols: every node's certificate and every password come from the deploy.
        "xpack.security.enrollment.enabled": "false",
        # Clients check the node (its certificate, its name); the node checks their passwords.
        "xpack.security.http.ssl.enabled": "true",
        "xpack.security.http.ssl.key": HTTP_KEY,
        "xpack.security.http.ssl.certificate": HTTP_CERT,
        "xpack.security.transport.ssl.enabled": "true",
        "xpack.security.transport.ssl.verification_mode": "certificate",
        "xpack.security.transport.ssl.key": f"{SECRETS}/transport.key",
        "xpack.security.transport.ssl.certificate": f"{SECRETS}/transport.crt",
        "xpack.security.transport.ssl.certificate_authorities": f"{SECRETS}/transport-ca.crt",
        # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/license-settings.html
        "xpack.license.self_generated.type": "basic",
    }


def node_environment(env: str, name: str, nodes: tuple[str, ...], seeds: tuple[str, ...], publish: str | None,
                     heap_mb: int) -> dict[str, str]:
    """The node's whole environment: settings by name, and the image's own variables."""
    return {
        **cluster_settings(env, name, nodes, seeds, publish),
        **security_settings(),
        # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/setup-configuration-memory.html
        "bootstrap.memory_lock": "true",
        # No call home: the GeoIP database downloader reaches the internet.
        # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/geoip-processor.html
        "ingest.geoip.downloader.enabled": "false",
        # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/advanced-configuration.html
        "ES_JAVA_OPTS": f"-Xms{heap_mb}m -Xmx{heap_mb}m",
        # The bootstrap password of `elastic` (first start only; the setup job keeps it current):
        # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/docker.html#docker-env-config-vars
        "ELASTIC_PASSWORD_FILE": f"{SECRETS}/elastic_password",
    }


def compose(ctx, inst, logs) -> dict[str, Any]:
    """The node's compose service under the official image source."""
    es = logs.elasticsearch
    names = ctx.instance_names("elk", "elasticsearch")
    # The other nodes as this one reaches them: by name on one host, at their host's address across hosts.
    seeds = tuple(f"{ctx.peer_advertised(i) or i.name}:{TRANSPORT_PORT}"
                  for i in ctx.instances_of("elk", "elasticsearch") if i.name != inst.name)
    own = ctx.peer_advertised(inst)
    return {
        "environment": node_environment(ctx.env, inst.name, names, seeds, own, es.heap_mb),
        # https://www.elastic.co/guide/en/elasticsearch/reference/8.17/docker.html (production:
        # open files, and unlimited locked memory for bootstrap.memory_lock)
        "ulimits": {"nofile": {"soft": 65535, "hard": 65535}, "memlock": {"soft": -1, "hard": -1}},
        "volumes": [f"elasticsearch-data-{inst.number}:{DATA}"],
        "mem_limit": f"{es.memory_limit_mb}m",
        "stop_grace_period": "60s",
    }


def pem_block(bundle: str, kind: str, index: int) -> str:
    """The ``index``-th PEM block of type ``kind`` in ``bundle`` (the transport bundle holds the
    key, the node certificate, then the CA's), with its BEGIN and END lines."""
    begin, end = f"-----BEGIN {kind}-----", f"-----END {kind}-----"
    blocks = [begin + part.split(end, 1)[0] + end for part in bundle.split(begin)[1:] if end in part]
    if index >= len(blocks):
        raise ValueError(f"the transport bundle holds {len(blocks)} {kind} block(s), not {index + 1}: "
                         f"issue a new one with `make secrets-rotate NAME={TRANSPORT_TLS}`")
    return blocks[index]


def _node_names(settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses) a certificate of the nodes must hold: each node's name, loopback
    and its host's address (shipyard.tls.instance_names), as peers and clients reach them."""
    from shipyard import tls, topology

    names: list[str] = []
    addresses: list[str] = []
    for inst in topology.build(settings).instances_of("elk", "elasticsearch"):
        more_names, more_addresses = tls.instance_names(inst)
        names += more_names
        addresses += more_addresses
    return tuple(dict.fromkeys(names)) or ("localhost",), tuple(dict.fromkeys(addresses)) or ("127.0.0.1",)


def transport_bundle(repo: Path, env: str, environ: dict[str, str] | None = None) -> str:
    """A new ``elasticsearch_transport_tls``: key, certificate and CA certificate (PEM), the
    certificate naming every node (its name, loopback, its host's address) and signed by the
    environment's Elasticsearch CA, made once and held (shipyard.tls)."""
    from shipyard import tls
    from shipyard.inventory import load_environment  # the store calls this; settings only now

    ca = tls.ensure_ca(repo, env, (CA_CERT, CA_KEY), f"shipyard {env} elasticsearch transport CA", environ)
    node = tls.server_cert(ca, *_node_names(load_environment(repo, env, environ)))
    return (node.key_pem + node.cert_pem + ca.cert_pem).decode()


def http_bundle(repo: Path, env: str, environ: dict[str, str] | None = None) -> str:
    """A new ``elasticsearch_http_tls``: key, certificate and CA certificate (PEM), the
    certificate naming every node as its clients reach it (by name on the project network, at its
    host's address from other hosts, loopback from inside it) and signed by the log shipping CA."""
    from shipyard.components.elk import logstash
    from shipyard.inventory import load_environment  # the store calls this; settings only now

    return logstash.logs_ca_bundle(repo, env, environ, *_node_names(load_environment(repo, env, environ)))
