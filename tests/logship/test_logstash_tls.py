"""The shippers' TLS to Logstash, for real on the shipper's side: Debian's rsyslogd 8.2302 with
rsyslog-gnutls, running `production`'s rendered rsyslog.conf with `logs.logstash.enabled` (paths
moved into a temporary directory, Logstash's address to loopback), its key, certificate and CA
made by the secret store's own issuance and rendered by the component's own secret templates.

Logstash itself cannot run here: its tcp input is stood in for by a Python TLS server on
loopback configured as the rendered pipeline asks (server certificate ``logstash_input_tls``, a
client certificate of the log shipping CA required). What this shows: the shipper's TLS settings
are ones 8.2302 accepts, it presents its client certificate, and it sends its documents only to a
peer of the environment's CA that names ``logstash``. That Logstash requires the client's
certificate is its own (its documented ``ssl_client_authentication``, unit-checked in
tests/unit/test_elk.py), not shown here."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from shipyard import tls
from shipyard.components.elk import elasticsearch, logstash
from shipyard.inventory import load_environment
from shipyard.render import render_environment
from tests.logship.conftest import REPO, free_port, issued_files, relocated, wait_for

ENV = "production"
LOGSTASH = {"SHIPYARD_LOGS__LOGSTASH__ENABLED": "true"}


class TlsInput:
    """Logstash's tcp input as the pipeline configures it, standing in: TLS with the given
    certificate, a client certificate of ``ca`` required; keeps each line and the client's name,
    and each handshake it refused."""

    def __init__(self, cert: Path, key: Path, ca: Path):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.load_verify_locations(ca)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lines: list[dict] = []
        self.clients: set[str] = set()
        self.handshakes = 0
        self.refused: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._read, args=(raw,), daemon=True).start()

    def _read(self, raw: socket.socket) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as conn:
                subject = dict(part[0] for part in conn.getpeercert()["subject"])
                self.clients.add(subject["commonName"])
                self.handshakes += 1
                for line in conn.makefile("rb"):
                    self.lines.append(json.loads(line))
        except (ssl.SSLError, OSError) as error:
            self.refused.append(f"{type(error).__name__}: {error}")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def issued(tmp_path_factory) -> dict[str, bytes]:
    """The secret files of the shipper (app-1) and of Logstash, as the deploy writes them: values
    from a throw-away store over the real inventory, files from the component's templates."""
    return issued_files(tmp_path_factory.mktemp("store"), ENV, LOGSTASH, lambda built: (
        built.find("logstash"), next(i for i in built.instances_of("elk", "logship") if i.host.name == "app-1")))


@pytest.fixture
def shipper(tools, issued, tmp_path, processes):
    """``start(port)``: app-1's rendered rsyslog.conf shipping to 127.0.0.1:port."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for rel, content in issued.items():
        if rel.startswith("logship/"):
            (secrets / Path(rel).name).write_bytes(content)
            os.chmod(secrets / Path(rel).name, 0o400)
    settings = load_environment(REPO, ENV, LOGSTASH)
    text = render_environment(settings)["app-1"].files["logship/rsyslog.conf"].decode()

    def start(port: int):
        conf = relocated(text, tmp_path, free_port(), ("/run/secrets", str(secrets)),
                         ('target="10.0.3.31" port="5000"', f'target="127.0.0.1" port="{port}"'))
        for name in ("state", "containers"):
            (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / "audit.log").touch()
        (tmp_path / "rsyslog.conf").write_text(conf)
        return _run_rsyslogd(tools, tmp_path / "rsyslog.conf", processes)

    return start


def _run_rsyslogd(tools: Path, conf: Path, processes: list):
    import subprocess

    root = tools / "root"
    libs = root / "usr/lib/x86_64-linux-gnu"
    env = {**os.environ, "LD_LIBRARY_PATH": str(libs)}
    check = subprocess.run([root / "usr/sbin/rsyslogd", "-N1", "-f", conf, "-M", libs / "rsyslog"], env=env,
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    process = subprocess.Popen([root / "usr/sbin/rsyslogd", "-n", "-i", "NONE", "-f", conf, "-M", libs / "rsyslog"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    processes.append(process)
    return process


def _write_line(containers: Path, message: str) -> None:
    """One platform JSON line in a container's json-file, labelled as production's api-blue."""
    cid = os.urandom(32).hex()
    (containers / cid).mkdir(parents=True)
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
    line = {"level": "info", "logger": "api", "msg": message, "request_id": "r-tls"}
    with (containers / cid / f"{cid}-json.log").open("a") as f:
        f.write(json.dumps({"log": json.dumps(line) + "\n", "stream": "stdout", "time": stamp,
                            "attrs": {"com.docker.compose.project": f"shipyard-{ENV}",
                                      "com.docker.compose.service": "api-blue",
                                      "org.shipyard.component": "taskplatform"}}) + "\n")


def _files(issued: dict[str, bytes], tmp_path: Path) -> dict[str, Path]:
    out = {}
    for rel, content in issued.items():
        if rel.startswith("logstash/") and rel.endswith((".key", ".crt")):
            out[Path(rel).name] = tmp_path / Path(rel).name
            out[Path(rel).name].write_bytes(content)
    return out


def test_the_shipper_sends_its_documents_over_mutual_tls_to_logstashs_certificate(shipper, issued, tmp_path):
    mine = _files(issued, tmp_path)
    # Its input's key, certificate and CA; and the store's CA, for its output.
    assert set(mine) == {"input.key", "input.crt", "logs-ca.crt", elasticsearch.CLIENT_CA}
    server = TlsInput(mine["input.crt"], mine["input.key"], mine["logs-ca.crt"])
    try:
        shipper(server.port)
        _write_line(tmp_path / "containers", "over tls")
        [doc] = wait_for("the document at the TLS input", lambda: server.lines, timeout_s=30)
        assert doc["message"] == "over tls" and doc["request_id"] == "r-tls" and doc[logstash.ID_FIELD]
        assert server.clients == {logstash.CLIENT_NAME}  # the shipper presented its client certificate
        assert server.refused == []
    finally:
        server.close()


def test_the_shipper_sends_nothing_to_a_peer_of_another_ca(shipper, issued, tmp_path):
    """A listener at Logstash's address with a certificate naming ``logstash`` but made by
    another CA (one who took the address): the shipper checks the peer once the handshake is
    done (rsyslog's gtls driver), closes and tries again later; no line is sent to it."""
    mine = _files(issued, tmp_path)
    stranger = tls.new_ca("not the environment's CA")
    fake = tls.server_cert(stranger, (logstash.SERVER_NAME,), ("127.0.0.1",))
    (tmp_path / "fake.crt").write_bytes(fake.cert_pem)
    (tmp_path / "fake.key").write_bytes(fake.key_pem)
    server = TlsInput(tmp_path / "fake.crt", tmp_path / "fake.key", mine["logs-ca.crt"])
    try:
        shipper(server.port)
        _write_line(tmp_path / "containers", "not for strangers")
        wait_for("the shipper trying three times", lambda: server.handshakes >= 3, timeout_s=60)
        assert server.lines == [], server.lines
    finally:
        server.close()
