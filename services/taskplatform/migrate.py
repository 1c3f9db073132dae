"""`taskplatform migrate`: alembic upgrade head, run once per deploy before the app serves."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL

from taskplatform.secrets import SecretSource
from taskplatform.settings import ProcessSettings


def alembic_config(settings: ProcessSettings, secrets: SecretSource) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # URL.create quotes nothing into a string we build by hand, so any password works. Several
    # hosts go in the query (libpq multi-host); read-write picks the primary among them.
    config.attributes["url"] = URL.create(
        "postgresql+psycopg", username=settings.pg_user, password=secrets.get("postgres_password"),
        database=settings.pg_database,
        query={"host": [f"{host}:{port}" for host, port in settings.pg_nodes()], "target_session_attrs": "read-write"})
    return config


MIGRATIONS = Path(__file__).with_name("migrations")


def chain() -> dict:
    """The migrations this release carries, oldest first, and the destructive ones (expand/contract,
    docs/releases.md): a module marks itself with ``destructive = "<what it removes>"`` and
    ``unused_since = "<revision>"``, the revision from which on the code no longer needs it. No
    database: a release reads this from the new image and from the live colour before it migrates."""
    from alembic.script import ScriptDirectory

    revisions = list(reversed(list(ScriptDirectory(str(MIGRATIONS)).walk_revisions())))
    return {"chain": [r.revision for r in revisions],
            "destructive": {r.revision: {"removes": r.module.destructive,
                                         "unused_since": getattr(r.module, "unused_since", None)}
                            for r in revisions if getattr(r.module, "destructive", None)}}


def upgrade(settings: ProcessSettings, secrets: SecretSource) -> None:
    command.upgrade(alembic_config(settings, secrets), "head")
