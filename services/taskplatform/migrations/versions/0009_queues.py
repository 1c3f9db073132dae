"""a task's priority and queue, for per-queue dispatch; a schedule's priority for its tasks

Revision ID: 0009

Expand-only, no rewrite and no long lock: ``priority`` is NOT NULL with a constant default
(PostgreSQL 11+ stores the default in the catalogue, the table is not rewritten), so the rows of
a release before this one — which names neither column — get 5, the default priority; ``queue``
is nullable without a default: such a row's queue is its kind's (``kinds.queue_of``), which that
release did not record. No CHECK on ``priority``: adding one reads the whole table under an
exclusive lock; the API validates 0-9, and only the platform writes the column.
``schedules.priority`` likewise: a schedule an older release made gives its tasks 5.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE tasks ADD COLUMN IF NOT EXISTS priority smallint NOT NULL DEFAULT 5")
    op.execute("ALTER TABLE tasks ADD COLUMN IF NOT EXISTS queue text")
    op.execute("ALTER TABLE schedules ADD COLUMN IF NOT EXISTS priority smallint NOT NULL DEFAULT 5")


def downgrade() -> None:
    # Expand-only: the columns stay (the release before this one ignores them).
    pass
