"""The log pipeline's programs for real, on loopback, no Docker: Debian's rsyslog 8.2302 with the
shipper's rendered rsyslog.conf (paths moved into a temporary directory), the exporter it runs,
and osmem-server behind the stand-in's own entrypoint. `make test-logship` fetches them
(tests/logship/fetch-tools.sh into .cache/logship: unpacked, nothing installed as a service).

Every wait is for a condition, with a deadline; every process is stopped at the end."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from shipyard.inventory import load_environment
from shipyard.render import render_host

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("SHIPYARD_LOGSHIP_TOOLS", REPO / ".cache/logship"))
RSYSLOG = TOOLS / "root"
EXPORTER = REPO / "shipyard/components/elk/image/logship/logship-exporter.py"
STAND_IN = REPO / "shipyard/components/elk/image/logstore/stand-in.sh"
ENV = "ci"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout_s: float = 30, every_s: float = 0.2):
    """check() until it returns something true; its last value (or exception) in the failure."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError, urllib.error.URLError) as error:
            last = error
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


def http(method: str, url: str, body: bytes | None = None, content_type: str = "application/json") -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metrics(port: int) -> dict[str, float]:
    """The exporter's samples: 'name{labels}' -> value."""
    _, text = http("GET", f"http://127.0.0.1:{port}/metrics")
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="session")
def tools() -> Path:
    missing = [p for p in (RSYSLOG / "usr/sbin/rsyslogd", TOOLS / "osmem-server") if not p.exists()]
    if missing or not shutil.which("socat"):
        pytest.fail(f"missing {', '.join(map(str, missing)) or 'socat'}: run `make host-test-logship`")
    return TOOLS


@pytest.fixture(scope="session")
def rendered() -> dict[str, bytes]:
    settings = load_environment(REPO, ENV, {})
    return render_host(settings, settings.hosts[0]).files


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for process in reversed(started):
        stop(process)


@pytest.fixture
def start_store(tools, rendered, tmp_path, processes):
    """The stand-in as its image runs it: stand-in.sh, osmem-server on an inner loopback port,
    the rendered setup script (its files moved here), socat on the store's port."""
    setup = tmp_path / "logs-setup"
    setup.mkdir(exist_ok=True)
    for rel, content in rendered.items():
        if rel.startswith("logs-setup/"):
            (setup / Path(rel).name).write_bytes(content.replace(b"/etc/logs-setup", str(setup).encode()))

    def start(port: int | None = None) -> tuple[int, subprocess.Popen]:
        port = port or free_port()
        env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "STAND_IN_PORT": str(port),
               "STAND_IN_INNER_PORT": str(free_port()), "STAND_IN_SETUP": str(setup / "setup.sh")}
        process = subprocess.Popen(["sh", str(STAND_IN)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        processes.append(process)
        return port, process

    return start


def issued_files(root: Path, env: str, variables: dict[str, str], wanted) -> dict[str, bytes]:
    """The secret files of the instances ``wanted(topology)`` gives, as the deploy writes them
    (``<instance>/<file>``): values from a throw-away store in ``root`` over the real inventory,
    files from the component's own secret templates."""
    from shipyard import secretstore, topology
    from shipyard.apply.rollout import secret_files
    from shipyard.render import secret_variables

    (root / "inventories").symlink_to(REPO / "inventories")
    values = secretstore.load_or_create(root, env, {secretstore.IDENTITY_DIR_VAR: str(root / "ids"), **variables})
    settings = load_environment(REPO, env, variables)
    files = {}
    for inst in wanted(topology.build(settings)):
        for one in secret_files("/p", (inst,), values, None, secret_variables(settings, inst.host)):
            files[one.path.removeprefix("/p/secrets/")] = one.content
    return files


def relocated(text: str, tmp_path: Path, metrics_port: int, *extra: tuple[str, str]) -> str:
    """A shipper's rendered rsyslog.conf runnable here: its state, the engine's log folder and
    the audit log moved under ``tmp_path``, the exporter run from this checkout on
    ``metrics_port``, and the ``extra`` (old, new) replacements; every one must be there."""
    for old, new in (("/var/lib/rsyslog", str(tmp_path / "state")),
                     ("/var/lib/docker/containers", str(tmp_path / "containers")),
                     ("/var/log/shipyard/audit.log", str(tmp_path / "audit.log")),
                     ("/usr/bin/python3 -B /usr/local/bin/logship-exporter", f"{sys.executable} -B {EXPORTER}"),
                     ("--listen :9104", f"--listen 127.0.0.1:{metrics_port}"), *extra):
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture
def shipper_conf(rendered, tmp_path):
    """The shipper's rendered rsyslog.conf of ci, its paths moved under tmp_path, writing to
    ``store_url``, the exporter on ``metrics_port``, impstats every second."""

    def conf(store_port: int, metrics_port: int) -> Path:
        text = relocated(rendered["logship/rsyslog.conf"].decode(), tmp_path, metrics_port,
                         ("http://elasticsearch-1:9200", f"http://127.0.0.1:{store_port}"))
        text, n = re.subn(r'(module\(load="impstats" interval=)"\d+"', r'\1"1"', text)
        assert n == 1
        for name in ("state", "containers"):
            (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / "audit.log").touch()
        path = tmp_path / "rsyslog.conf"
        path.write_text(text)
        return path

    return conf


@pytest.fixture
def start_shipper(tools, processes, tmp_path):
    def start(conf: Path) -> subprocess.Popen:
        libs = RSYSLOG / "usr/lib/x86_64-linux-gnu"
        check = subprocess.run([RSYSLOG / "usr/sbin/rsyslogd", "-N1", "-f", conf, "-M", libs / "rsyslog"],
                               env={**os.environ, "LD_LIBRARY_PATH": str(libs)}, capture_output=True, text=True,
                               timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        process = subprocess.Popen([RSYSLOG / "usr/sbin/rsyslogd", "-n", "-i", "NONE", "-f", conf, "-M", libs / "rsyslog"],
                                   env={**os.environ, "LD_LIBRARY_PATH": str(libs)}, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(process)
        return process

    return start


class EngineFile:
    """A container's json-file as the engine writes it, with the labels the shipper reads."""

    def __init__(self, containers: Path, service: str, env: str = ENV):
        cid = os.urandom(32).hex()
        (containers / cid).mkdir(parents=True)
        self.path = containers / cid / f"{cid}-json.log"
        self.service = service
        self.env = env
        self.written = 0

    def write(self, lines: list[dict]) -> None:
        with self.path.open("a") as f:
            for line in lines:
                self.written += 1
                now = time.time()
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
                f.write(json.dumps({"log": json.dumps(line) + "\n", "stream": "stdout", "time": stamp,
                                    "attrs": {"com.docker.compose.project": f"shipyard-{self.env}",
                                              "com.docker.compose.service": self.service,
                                              "org.shipyard.component": "taskplatform"}}) + "\n")


def count(store_port: int, query: dict | None = None) -> int:
    body = json.dumps({"query": query or {"match_all": {}}}).encode()
    status, text = http("POST", f"http://127.0.0.1:{store_port}/shipyard-logs-{ENV}-*/_count", body)
    return json.loads(text)["count"] if status == 200 else -1
