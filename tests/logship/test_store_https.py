"""The shippers' HTTPS to Elasticsearch (official image source, no Logstash), for real on the
shipper's side: Debian's rsyslogd 8.2302 (omelasticsearch, libcurl) running `production`'s
rendered rsyslog.conf of app-1 (paths moved into a temporary directory, the store's address to
loopback, which the node's certificate names), its password and the store's CA made by the secret
store's own issuance and rendered by the component's own secret templates.

Elasticsearch cannot run here: its _bulk API is stood in for by a Python HTTPS server with the
node's certificate (``elasticsearch_http_tls``, its http.key and http.crt files as the node gets
them), answering 401 without the shipper's login, as Elasticsearch with security does. What this
shows: 8.2302 accepts the TLS settings, checks the store's certificate against the CA file it is
given and the name it connects to, logs in as ``logship``, and sends neither documents nor its
password to a server whose certificate another CA made. That Elasticsearch serves the issued
certificate is its own (its documented ``xpack.security.http.ssl`` settings, unit-checked in
tests/unit/test_elk.py), not shown here."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shipyard import tls
from shipyard.components.elk import elasticsearch
from shipyard.inventory import load_environment
from shipyard.render import render_environment
from tests.logship.conftest import REPO, EngineFile, free_port, issued_files, relocated, wait_for

ENV = "production"
STORE = "https://10.0.3.31:9200"  # app-1's shipper reaches the node at its host's address


class BulkStore:
    """Elasticsearch's HTTP API over TLS as far as the shipper uses it, standing in: 401 without
    the one login it takes; ``_bulk`` keeps each document. Counts connections and the handshakes
    that failed, and every login it was sent."""

    def __init__(self, cert: Path, key: Path, user: str, password: str):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.login = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.documents: list[dict] = []
        self.logins: list[str] = []
        self.connections = 0
        self.refused: list[str] = []
        store = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                raw, address = self.socket.accept()
                store.connections += 1
                try:
                    return store.context.wrap_socket(raw, server_side=True), address
                except OSError as error:  # ssl.SSLError too: the client gave up on the handshake
                    store.refused.append(f"{type(error).__name__}: {error}")
                    raw.close()
                    raise

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _authorized(self) -> bool:
                sent = self.headers.get("Authorization")
                if sent:
                    store.logins.append(sent)
                if sent != store.login:
                    self._answer(401, {"error": "missing authentication credentials", "status": 401})
                    return False
                return True

            def do_GET(self) -> None:
                if self._authorized():
                    self._answer(200, {"version": {"number": "8.17.4"}, "status": "green"})

            do_HEAD = do_GET

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if not self._authorized():
                    return
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                items = []
                for action, document in zip(lines[0::2], lines[1::2]):
                    [(op, meta)] = action.items()
                    store.documents.append(document)
                    items.append({op: {"_index": meta.get("_index"), "_id": meta.get("_id"), "status": 201}})
                self._answer(200, {"took": 1, "errors": False, "items": items})

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def issued(tmp_path_factory) -> dict[str, bytes]:
    """The secret files of app-1's shipper and of the node, as the deploy writes them: values
    from a throw-away store over the real inventory, files from the component's templates."""
    return issued_files(tmp_path_factory.mktemp("store"), ENV, {}, lambda built: (
        built.find("elasticsearch-1"), next(i for i in built.instances_of("elk", "logship") if i.host.name == "app-1")))


@pytest.fixture
def shipper(issued, tmp_path, start_shipper):
    """``start(port)``: app-1's rendered rsyslog.conf shipping to https://127.0.0.1:port."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for rel, content in issued.items():
        if rel.startswith("logship/"):
            (secrets / Path(rel).name).write_bytes(content)
    text = render_environment(load_environment(REPO, ENV, {}))["app-1"].files["logship/rsyslog.conf"].decode()

    def start(port: int):
        conf = relocated(text, tmp_path, free_port(), ("/run/secrets", str(secrets)),
                         (f'server=["{STORE}"]', f'server=["https://127.0.0.1:{port}"]'))
        for name in ("state", "containers"):
            (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / "audit.log").touch()
        (tmp_path / "rsyslog.conf").write_text(conf)
        return start_shipper(tmp_path / "rsyslog.conf")

    return start


def _write(tmp_path: Path, message: str) -> None:
    EngineFile(tmp_path / "containers", "api-blue", ENV).write(
        [{"level": "info", "logger": "api", "msg": message, "request_id": "r-https"}])


def _node_file(issued: dict[str, bytes], tmp_path: Path, path: str) -> Path:
    out = tmp_path / Path(path).name
    out.write_bytes(issued[f"elasticsearch-1/{Path(path).name}"])
    return out


def test_the_shipper_writes_over_https_as_logship_checking_the_stores_certificate(shipper, issued, tmp_path):
    password = issued["logship/logship_password"].decode()
    store = BulkStore(_node_file(issued, tmp_path, elasticsearch.HTTP_CERT),
                      _node_file(issued, tmp_path, elasticsearch.HTTP_KEY), "logship", password)
    try:
        shipper(store.port)
        _write(tmp_path, "over https")
        [doc] = wait_for("the document in the store", lambda: store.documents, timeout_s=30)
        assert doc["message"] == "over https" and doc["request_id"] == "r-https" and doc["env"] == ENV
        assert store.refused == [] and set(store.logins) == {store.login}
    finally:
        store.close()


def test_the_shipper_sends_neither_documents_nor_its_password_to_a_store_of_another_ca(shipper, issued, tmp_path):
    """A server at the store's address whose certificate names it but another CA made (one who
    took the address): the handshake fails on the shipper's side, before any request."""
    stranger = tls.new_ca("not the environment's CA")
    fake = tls.server_cert(stranger, ("elasticsearch-1", "localhost"), ("127.0.0.1", "10.0.3.31"))
    (tmp_path / "fake.crt").write_bytes(fake.cert_pem)
    (tmp_path / "fake.key").write_bytes(fake.key_pem)
    password = issued["logship/logship_password"].decode()
    store = BulkStore(tmp_path / "fake.crt", tmp_path / "fake.key", "logship", password)
    try:
        shipper(store.port)
        _write(tmp_path, "not for strangers")
        wait_for("the shipper trying three times", lambda: len(store.refused) >= 3, timeout_s=90)
        assert store.documents == [] and store.logins == []
    finally:
        store.close()
