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

The output writes to Elasticsearch over HTTPS (``output_ssl``: the store's HTTP certificate
checked against the log shipping CA, which issued it, and the node's name), as the
least-privilege user ``logstash_writer`` (security.py).

The input takes only TLS connections from holders of a client certificate of the environment's
log shipping CA (mutual TLS, ``ssl_client_authentication => "required"``): the shippers, whose
client certificate is the secret ``SHIPPER_TLS``. Logstash's own certificate (``INPUT_TLS``) is
issued from the same CA and names ``SERVER_NAME``, which the shippers require of it. Both are
issued by the deploy from that CA, held on the deploying machine only (``logs_ca_cert``,
``logs_ca_key``) like Elasticsearch's transport CA — a CA of its own: Elasticsearch's transport
trusts any certificate of its CA, so that one must sign nothing else. A certificate rather than a
password: Logstash's tcp input has no password check, and a password in the pipeline would have
to come from its keystore or an environment variable (none is allowed to hold a secret here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.components.elk.elasticsearch import CLIENT_CA

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
# Mutual TLS between the shippers and the input (the module's docstring).
LOGS_CA_CERT, LOGS_CA_KEY = "logs_ca_cert", "logs_ca_key"
INPUT_TLS = "logstash_input_tls"  # Logstash's key, certificate and the CA's certificate (PEM)
SHIPPER_TLS = "logship_client_tls"  # the shippers' key, client certificate and the CA's certificate
SERVER_NAME = "logstash"  # in Logstash's certificate; the shippers accept no other peer
CLIENT_NAME = "logship"
# Logstash's files, in its secrets folder (the pipeline glob reads *.conf only).
INPUT_KEY, INPUT_CERT, INPUT_CA = (f"{SECRETS}/input.key", f"{SECRETS}/input.crt", f"{SECRETS}/logs-ca.crt")
# The shippers' files, in their secrets folder.
# The store's CA (elasticsearch.CLIENT_CA), in Logstash's secrets folder, for its output.
OUTPUT_CA = f"{SECRETS}/{CLIENT_CA}"
SHIPPER_KEY, SHIPPER_CERT, SHIPPER_CA = ("/run/secrets/logship-client.key", "/run/secrets/logship-client.crt",
                                         "/run/secrets/logs-ca.crt")


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


def input_ssl() -> dict[str, Any]:
    """The tcp input's TLS options: server certificate, and a client certificate of the logs CA
    required of every connection.
    https://www.elastic.co/guide/en/logstash/8.17/plugins-inputs-tcp.html (``ssl_enabled``,
    ``ssl_certificate``, ``ssl_key`` — PKCS#8, as shipyard.tls writes it —,
    ``ssl_certificate_authorities``, ``ssl_client_authentication``: none, optional, required)."""
    return {"ssl_enabled": True, "ssl_certificate": INPUT_CERT, "ssl_key": INPUT_KEY,
            "ssl_certificate_authorities": [INPUT_CA], "ssl_client_authentication": "required"}


def output_ssl() -> dict[str, Any]:
    """The elasticsearch output's TLS options (the plugin's 11.x names, bundled with 8.17; the
    older ``ssl``, ``cacert`` and ``ssl_certificate_verification`` are deprecated there):
    https://www.elastic.co/guide/en/logstash/8.17/plugins-outputs-elasticsearch.html
    (``ssl_enabled``, ``ssl_certificate_authorities``, ``ssl_verification_mode``: full, none)."""
    return {"ssl_enabled": True, "ssl_certificate_authorities": [OUTPUT_CA], "ssl_verification_mode": "full"}


def option_lines(options: dict[str, Any]) -> list[str]:
    """``key => value`` lines of a plugin's options in Logstash's config syntax: booleans bare,
    strings quoted, lists as arrays of strings. The values are paths and keywords of ours: none
    holds a quote or a backslash (refused, rather than escaped)."""
    lines = []
    for key, value in options.items():
        items = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and ('"' in v or "\\" in v) for v in items):
            raise ValueError(f"Logstash option {key}: a quote or backslash in {value!r}")
        if isinstance(value, bool):
            lines.append(f"{key} => {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f'{key} => "{value}"')
        else:
            lines.append(f"{key} => [" + ", ".join(f'"{v}"' for v in value) + "]")
    return lines


def logs_ca_bundle(repo: Path, env: str, environ: dict[str, str] | None, names: tuple[str, ...],
                   addresses: tuple[str, ...]) -> str:
    """Key, certificate (``names``, ``addresses``) and CA certificate (PEM), issued from the
    environment's log shipping CA (made once and held: shipyard.tls.ensure_ca)."""
    from shipyard import tls

    ca = tls.ensure_ca(repo, env, (LOGS_CA_CERT, LOGS_CA_KEY), f"shipyard {env} log shipping CA", environ)
    pair = tls.server_cert(ca, names, addresses)
    return (pair.key_pem + pair.cert_pem + ca.cert_pem).decode()


def input_bundle(repo: Path, env: str, environ: dict[str, str] | None = None) -> str:
    """A new ``logstash_input_tls``: key, certificate and CA certificate, the certificate naming
    ``SERVER_NAME`` (what the shippers check) and where Logstash is reached (its host's address)."""
    from shipyard import tls, topology
    from shipyard.inventory import load_environment  # the store calls this; settings only now

    settings = load_environment(repo, env, environ)
    names, addresses = [SERVER_NAME], ["127.0.0.1"]
    for inst in topology.build(settings).instances_of("elk", "logstash"):
        more_names, more_addresses = tls.instance_names(inst)
        names += more_names
        addresses += more_addresses
    return logs_ca_bundle(repo, env, environ, tuple(dict.fromkeys(names)), tuple(dict.fromkeys(addresses)))


def client_bundle(repo: Path, env: str, environ: dict[str, str] | None = None) -> str:
    """A new ``logship_client_tls``: the shippers' key, certificate (``CLIENT_NAME``; client and
    server use, as shipyard.tls makes them) and the CA's certificate, which they check Logstash's
    against."""
    return logs_ca_bundle(repo, env, environ, (CLIENT_NAME,), ())
