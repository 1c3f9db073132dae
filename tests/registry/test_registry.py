"""The registry as the component renders and secures it, against Debian's real docker-registry
(conftest.py): TLS that verifies against the environment's registry CA only, htpasswd auth with
the delivered bcrypt file, and an image pushed and pulled through the v2 HTTP API the way an
engine does it (blob uploads, a config blob, a schema2 manifest by tag)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile

import pytest
import requests

from shipyard.components.registry import certificates

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
REPOSITORY = "shipyard/tiny"


def _auth(registry, password: str | None = None) -> tuple[str, str]:
    return certificates.USER, registry.password if password is None else password


def _get(registry, path: str, **kwargs) -> requests.Response:
    return requests.get(f"{registry.url}{path}", verify=str(registry.ca_file), timeout=10, **kwargs)


def test_tls_verifies_against_the_registry_ca_and_not_without_it(registry):
    assert _get(registry, "/v2/").status_code == 401  # the handshake verified against the CA
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{registry.url}/v2/", timeout=10)  # the system's CAs do not know it
    # The certificate names localhost as well (registry.names): a host that reaches it by name.
    port = registry.url.rsplit(":", 1)[1]
    assert requests.get(f"https://localhost:{port}/v2/", verify=str(registry.ca_file), timeout=10).status_code == 401


def test_the_api_asks_for_credentials_and_takes_only_the_right_ones(registry):
    anonymous = _get(registry, "/v2/")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="shipyard-t"'
    assert _get(registry, "/v2/", auth=_auth(registry)).status_code == 200
    assert _get(registry, "/v2/", auth=_auth(registry, registry.password + "x")).status_code == 401
    assert _get(registry, "/v2/", auth=("someone", registry.password)).status_code == 401


def _upload(registry, data: bytes) -> str:
    """A blob, pushed as an engine does: POST opens an upload, PUT with its digest completes it."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    opened = requests.post(f"{registry.url}/v2/{REPOSITORY}/blobs/uploads/", auth=_auth(registry),
                           verify=str(registry.ca_file), timeout=10)
    assert opened.status_code == 202, opened.text
    location = opened.headers["Location"]
    location = location if location.startswith("https://") else registry.url + location
    done = requests.put(location, params={"digest": digest}, data=data, auth=_auth(registry),
                        headers={"Content-Type": "application/octet-stream"}, verify=str(registry.ca_file), timeout=10)
    assert done.status_code == 201, done.text
    assert done.headers["Docker-Content-Digest"] == digest
    return digest


def _layer() -> bytes:
    """A one-file layer, gzipped tar (deterministic)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        body = b"shipyard registry test\n"
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(body), 0
        tar.addfile(info, io.BytesIO(body))
    return gzip.compress(raw.getvalue(), mtime=0)


def test_an_image_pushed_by_the_v2_api_is_pulled_back_by_tag(registry):
    layer = _layer()
    layer_digest = _upload(registry, layer)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}, sort_keys=True).encode()
    config_digest = _upload(registry, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_V2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                   "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer),
                    "digest": layer_digest}]}).encode()
    pushed = requests.put(f"{registry.url}/v2/{REPOSITORY}/manifests/v1", data=manifest, auth=_auth(registry),
                          headers={"Content-Type": MANIFEST_V2}, verify=str(registry.ca_file), timeout=10)
    assert pushed.status_code == 201, pushed.text
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    assert pushed.headers["Docker-Content-Digest"] == manifest_digest
    # Pulled back: the manifest by its tag, byte for byte, then the blobs it names.
    pulled = _get(registry, f"/v2/{REPOSITORY}/manifests/v1", auth=_auth(registry), headers={"Accept": MANIFEST_V2})
    assert pulled.status_code == 200 and pulled.content == manifest
    assert pulled.headers["Docker-Content-Digest"] == manifest_digest
    assert _get(registry, f"/v2/{REPOSITORY}/blobs/{layer_digest}", auth=_auth(registry)).content == layer
    assert _get(registry, f"/v2/{REPOSITORY}/tags/list", auth=_auth(registry)).json() == {"name": REPOSITORY,
                                                                                         "tags": ["v1"]}
    # Without credentials nothing is read.
    assert _get(registry, f"/v2/{REPOSITORY}/manifests/v1", headers={"Accept": MANIFEST_V2}).status_code == 401


def test_the_health_probe_answers_on_the_debug_address(registry):
    assert requests.get(f"{registry.debug_url}/debug/health", timeout=10).status_code == 200


def test_its_log_is_json_lines_with_no_secret_in_them(registry):
    _get(registry, "/v2/", auth=_auth(registry))  # at least one request logged
    lines = [line for line in registry.log.read_text().splitlines() if line.strip()]
    # Every line of distribution's logger is one JSON object; Go's HTTP server writes its own
    # connection errors (a client that refused the certificate) as plain lines, past that logger.
    plain = [line for line in lines if not line.startswith("{")]
    assert all(re.match(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d http: ", line) for line in plain), plain
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    # log.fields ride on the application's own lines; distribution 2.8 leaves them off its request
    # lines (the log shipper names the environment and service of every line from its container).
    app_lines = [e for e in entries if "instance.id" in e]
    assert app_lines and all(e["environment"] == "t" and e["service"] == "registry" for e in app_lines)
    requests_logged = [e for e in entries if e.get("msg") == "response completed"]
    assert "/v2/" in {e["http.request.uri"] for e in requests_logged}
    text = registry.log.read_text()
    assert registry.password not in text
    assert (registry.root / "secrets" / "registry.http-secret").read_text() not in text
    # start.sh handed http.secret over: distribution did not make up one of its own.
    assert "No HTTP secret provided" not in text
