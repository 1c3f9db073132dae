"""api_keys: the credentials a tenant's admin creates through the API (``taskplatform.api_keys``)

Revision ID: 0005

Expand-only: a new table, which a release before this one never reads. The app role gets its
rows through the migrator's default privileges (``taskplatform db-setup``), like every table. A
key is revoked by setting ``revoked_at``, never deleted: the list keeps showing who made which
key and when it stopped working. Only the SHA-256 of the key's secret is stored.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE IF NOT EXISTS api_keys (
            id text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
            tenant text NOT NULL,
            name text NOT NULL,
            scopes text[] NOT NULL,
            secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
            created_by text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            expires_at timestamptz,
            revoked_at timestamptz
        )
    """)
    op.execute("CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant, created_at DESC)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS api_keys")
