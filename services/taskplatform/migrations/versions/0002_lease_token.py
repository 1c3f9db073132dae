"""per-claim lease token

Revision ID: 0002

Expand-only (a nullable column, no rewrite, no lock beyond a moment): the previous release
keeps running against it during a blue/green switch. Each claim writes a fresh random token;
renew, complete, fail and hand-back match it, so an attempt that lost its lease can never
record anything on the next holder's attempt.
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE tasks ADD COLUMN IF NOT EXISTS lease_token uuid")


def downgrade() -> None:
    # Expand-only: the column stays (the release before this one ignores it).
    pass
