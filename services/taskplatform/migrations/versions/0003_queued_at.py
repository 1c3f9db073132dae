"""when a task last became queued, for the queue's oldest-task age

Revision ID: 0003

Expand-only: a nullable column without a default (no rewrite) and a partial index over the
queued tasks alone (small: what waits). ``created_at`` does not say how long a task has waited:
a retry falls due, a lost attempt is queued again, a dead task is re-driven, each long after
its creation; ``updated_at`` neither: the reconciler touches it, a hand-back backdates it. Rows
a release before this one queues carry no ``queued_at``: they count from ``created_at``
(``coalesce``), which the index is on.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE tasks ADD COLUMN IF NOT EXISTS queued_at timestamptz")
    op.execute("CREATE INDEX IF NOT EXISTS tasks_queued_since ON tasks ((coalesce(queued_at, created_at))) "
               "WHERE status = 'queued'")


def downgrade() -> None:
    # Expand-only: the column and index stay (the release before this one ignores them).
    pass
