"""`taskplatform db-setup` on a real PostgreSQL: the app role reads and writes rows and nothing
else, the migrator owns the schema (also what existed before the roles did), and later
migrations' tables reach the app role by default privileges. Idempotent."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from taskplatform import dbsetup, migrate
from taskplatform.secrets import SecretError, SecretSource
from taskplatform.settings import ProcessSettings
from taskplatform_testing.servers import Postgres


class Given(SecretSource):
    def __init__(self, **values: str):
        self.values = values

    def get(self, name: str) -> str:
        if name not in self.values:
            raise SecretError(name)
        return self.values[name]


@pytest.fixture(scope="module")
def pg():
    root = Path(tempfile.mkdtemp(prefix="taskplatform-dbsetup-"))
    os.chmod(root, 0o755)  # the server runs as the postgres user
    server = Postgres(root / "pg").start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def _connect(pg, user: str, password: str):
    return psycopg.connect(host="127.0.0.1", port=pg.port, dbname=pg.database, user=user, password=password,
                           autocommit=True)


def test_roles_get_least_privilege_over_an_existing_schema(pg):
    settings = ProcessSettings(pg_host="127.0.0.1", pg_port=pg.port, pg_user=pg.user, pg_database=pg.database,
                               pg_admin_user=pg.user)
    # A database from before the roles: the schema was migrated by the superuser.
    migrate.upgrade(settings, Given(postgres_password=pg.password))
    secrets = Given(postgres_admin_password=pg.password, migrator_password="m" * 32, app_password="a" * 32)
    done = dbsetup.setup(settings, secrets)
    assert "table tasks now owned by tasks_migrator" in done
    with _connect(pg, "tasks_app", "a" * 32) as app:
        app.execute("SELECT count(*) FROM tasks")
        app.execute("UPDATE tasks SET status = status WHERE false")  # rows: read and write
        for ddl in ("CREATE TABLE app_table (i int)", "DROP TABLE tasks", "ALTER TABLE tasks ADD COLUMN x int"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(ddl)
        assert app.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                           "WHERE rolname = current_user").fetchone() == (False, False, False)
    with _connect(pg, "tasks_migrator", "m" * 32) as migrator:
        migrator.execute("CREATE TABLE later_migration (i int)")
        migrator.execute("INSERT INTO later_migration VALUES (1)")
    with _connect(pg, "tasks_app", "a" * 32) as app:
        assert app.execute("SELECT i FROM later_migration").fetchone() == (1,)  # default privileges
    # Again, with a new app password: idempotent, and the password follows the secret.
    assert dbsetup.setup(settings, Given(postgres_admin_password=pg.password, migrator_password="m" * 32,
                                         app_password="b" * 32))[-1].startswith("roles tasks_migrator")
    with _connect(pg, "tasks_app", "b" * 32) as app:
        app.execute("SELECT count(*) FROM tasks")
    # Migrations run as the migrator from now on.
    migrate.upgrade(settings.model_copy(update={"pg_user": "tasks_migrator"}), Given(postgres_password="m" * 32))
