"""an index of the finished tasks by when they finished, for retention

Revision ID: 0007

Expand-only. Built CONCURRENTLY, outside the migration's transaction: a plain CREATE INDEX would
hold off every create (its SHARE lock) for as long as it reads the whole table. A build that
failed half-way leaves an invalid index, which IF NOT EXISTS would keep: it is dropped first.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        invalid = op.get_bind().execute(sa.text(
            "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = 'tasks_finished' AND NOT i.indisvalid")).scalar()
        if invalid:
            op.execute("DROP INDEX CONCURRENTLY IF EXISTS tasks_finished")
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_finished ON tasks (updated_at) "
                   "WHERE status IN ('succeeded', 'dead', 'cancelled')")


def downgrade() -> None:
    # Expand-only: the index stays (the release before this one ignores it).
    pass
