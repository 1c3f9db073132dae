"""Alembic environment: the URL comes from the process settings + the secret source, passed
in by ``taskplatform.migrate`` through the config's attributes (never from a file)."""

from alembic import context
from sqlalchemy import create_engine

url = context.config.attributes["url"]
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
