"""the `scheduled` status: tasks created with run_at / delay_seconds wait in it until due

Revision ID: 0004

Expand-only: the status CHECK allows one more value (dropped and added again NOT VALID, then
validated: a short lock, no rewrite, and every existing row passes), and a partial index over
the scheduled tasks alone, by when they fall due (``run_after``, the column retries already
use). A release before this one never writes `scheduled`, and leaves such rows alone (its
claim takes only `queued`): during a blue/green switch the new release's workers queue them.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATUSES = "'scheduled', 'queued', 'running', 'retry_wait', 'succeeded', 'dead', 'cancelled'"


def upgrade() -> None:
    op.execute("ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_status_check")
    op.execute(f"ALTER TABLE tasks ADD CONSTRAINT tasks_status_check CHECK (status IN ({STATUSES})) NOT VALID")
    op.execute("ALTER TABLE tasks VALIDATE CONSTRAINT tasks_status_check")
    op.execute("CREATE INDEX IF NOT EXISTS tasks_scheduled_due ON tasks (run_after) WHERE status = 'scheduled'")


def downgrade() -> None:
    # Expand-only: the wider CHECK and the index stay (the release before this one ignores them).
    pass
