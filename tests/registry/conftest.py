"""Debian's docker-registry (distribution 2.8.2, /usr/bin/docker-registry; `make host-test-tools`
installs it) for real, on loopback, no Docker: started by the component's own files/registry/
start.sh with the config.yml the component renders — only its paths and listen addresses moved
into a temporary directory and free ports — and the secret files a deploy would deliver (the
certificate issued from the environment's registry CA, the htpasswd file, http.secret), all made
by the secret store of a throw-away checkout.

Every wait is for a condition, with a deadline; the server is stopped at the end."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from shipyard import secretstore, topology
from shipyard.apply.rollout import secret_files
from shipyard.components.registry import certificates
from shipyard.inventory import load_environment
from shipyard.render import render_host, secret_variables
from taskplatform_testing.servers import free_port
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
START = REPO / "shipyard/components/registry/files/registry/start.sh"
ENV = "t"
INVENTORY = (
    'SHIPYARD = {"name": "t", "secrets": {"generate_missing": True},\n'
    '            "registry": {"enabled": True, "names": ["localhost", "127.0.0.1"]}}\n'
    '_h = [("@local", {"shipyard_host": "box"})]\n'
    'edge = app = data = control = observability = registry = _h\n')


@dataclass(frozen=True)
class Registry:
    url: str  # https://127.0.0.1:<port>
    debug_url: str  # http://127.0.0.1:<port> (the health probe's /debug/health)
    ca_file: Path
    password: str
    log: Path
    root: Path


def _checkout(root: Path) -> tuple[Path, dict[str, str]]:
    """A throw-away checkout with environment t (the registry on) and its secret store."""
    (root / "inventories").mkdir(parents=True)
    (root / "inventories" / f"{ENV}.py").write_text(INVENTORY)
    environ = {secretstore.IDENTITY_DIR_VAR: str(root / "ids")}
    secretstore.load_or_create(root, ENV, environ)
    return root, environ


def _moved(config: dict, root: Path, secrets: Path, port: int, debug_port: int) -> dict:
    """The rendered config with its container paths and addresses moved to this test's."""
    config["storage"]["filesystem"]["rootdirectory"] = str(root / "data")
    config["http"]["addr"] = f"127.0.0.1:{port}"
    config["http"]["debug"]["addr"] = f"127.0.0.1:{debug_port}"
    tls = config["http"]["tls"]
    tls["certificate"] = str(secrets / Path(tls["certificate"]).name)
    tls["key"] = str(secrets / Path(tls["key"]).name)
    htpasswd = config["auth"]["htpasswd"]
    htpasswd["path"] = str(secrets / Path(htpasswd["path"]).name)
    return config


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    if not os.access(BINARY, os.X_OK):
        pytest.fail(f"{BINARY} is missing: `make host-test-tools` installs Debian's docker-registry")
    root = tmp_path_factory.mktemp("registry")
    repo, environ = _checkout(root / "checkout")
    settings = load_environment(repo, ENV, environ)
    host = settings.hosts[0]
    rendered = render_host(settings, host)
    values = secretstore.load_or_create(repo, ENV, environ)
    # The files a deploy delivers to the registry's secrets folder, as it renders them.
    on_host = tuple(i for i in topology.build(settings).instances_on(host) if i.component.name == "registry")
    secrets = root / "secrets"
    secrets.mkdir()
    for wanted in secret_files("/p", on_host, values, None, secret_variables(settings, host)):
        if wanted.content is not None and "/secrets/registry/" in wanted.path:
            (secrets / Path(wanted.path).name).write_bytes(wanted.content)
    port, debug_port = free_port(), free_port()
    config = _moved(yaml.safe_load(rendered.files["registry/config.yml"]), root, secrets, port, debug_port)
    (root / "config.yml").write_text(yaml.safe_dump(config))
    ca_file = root / "ca.crt"
    ca_file.write_text(secretstore.read_held(repo, ENV, certificates.CA_CERT, environ).value)
    log = root / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["sh", str(START), BINARY, "serve", str(root / "config.yml")], stdout=out,
                                   stderr=subprocess.STDOUT, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                                                  "HTTP_SECRET_FILE": str(secrets / "registry.http-secret")})
    server = Registry(f"https://127.0.0.1:{port}", f"http://127.0.0.1:{debug_port}", ca_file,
                      values[certificates.PASSWORD].value, log, root)
    try:
        wait_for(f"docker-registry answering on {server.url} (log: {log})",
                 lambda: process.poll() is None and _answers(server) or process.poll() is not None, 20)
        assert process.poll() is None, f"docker-registry exited {process.returncode}:\n{log.read_text()}"
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(server: Registry) -> bool:
    try:
        return requests.get(f"{server.url}/v2/", verify=str(server.ca_file), timeout=2).status_code == 401
    except requests.ConnectionError:
        return False
