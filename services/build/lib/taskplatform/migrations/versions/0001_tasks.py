"""tasks table

Revision ID: 0001
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE tasks (
            id uuid PRIMARY KEY,
            tenant text NOT NULL,
            kind text NOT NULL,
            payload jsonb NOT NULL,
            status text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'retry_wait', 'succeeded', 'dead', 'cancelled')),
            attempts integer NOT NULL DEFAULT 0,
            max_attempts integer NOT NULL,
            result jsonb,
            error text,
            idempotency_key text,
            run_after timestamptz,
            lease_until timestamptz,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
    """)
    op.execute("CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, idempotency_key) "
               "WHERE idempotency_key IS NOT NULL")
    op.execute("CREATE INDEX tasks_tenant_page ON tasks (tenant, created_at DESC, id DESC)")
    # The maintenance loops only look at unfinished tasks: keep those indexes small.
    op.execute("CREATE INDEX tasks_unfinished ON tasks (status, updated_at) "
               "WHERE status IN ('queued', 'running')")
    op.execute("CREATE INDEX tasks_retry_due ON tasks (run_after) WHERE status = 'retry_wait'")


def downgrade() -> None:
    op.execute("DROP TABLE tasks")
