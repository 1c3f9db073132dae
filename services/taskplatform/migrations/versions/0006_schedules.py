"""schedules: a tenant's recurring tasks, and the occurrences each has fired

Revision ID: 0006

Expand-only: two new tables, nothing of ``tasks`` changes (a release before this one neither
reads nor writes them). The app role gets its rows by the default privileges ``db-setup`` gave
it for whatever the migrator creates.

Exactly once per occurrence: a firer takes a due schedule's row (``FOR NO KEY UPDATE SKIP
LOCKED``), inserts each occurrence it fires here with the task it makes, and moves
``next_run_at`` on, all in one transaction. Two firers never hold one schedule at once; if one
dies mid-way nothing of its pass stays; and should a row ever be fired again (a clock or code
fault), the primary key on (schedule, occurrence) refuses the second task.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE IF NOT EXISTS schedules (
            id uuid PRIMARY KEY,
            tenant text NOT NULL,
            kind text NOT NULL,
            payload jsonb NOT NULL,
            cron text,
            timezone text,
            interval_seconds integer CHECK (interval_seconds > 0),
            catchup text NOT NULL CHECK (catchup IN ('latest', 'all', 'none')),
            paused boolean NOT NULL DEFAULT false,
            next_run_at timestamptz NOT NULL,
            last_fired_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            CHECK ((cron IS NULL) = (interval_seconds IS NOT NULL)),
            CHECK ((cron IS NULL) = (timezone IS NULL))
        )
    """)
    # What the firers look for: small, only the schedules that run.
    op.execute("CREATE INDEX IF NOT EXISTS schedules_due ON schedules (next_run_at) WHERE NOT paused")
    op.execute("CREATE INDEX IF NOT EXISTS schedules_tenant_page ON schedules (tenant, created_at DESC, id DESC)")
    op.execute("""
        CREATE TABLE IF NOT EXISTS schedule_occurrences (
            schedule_id uuid NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
            occurrence_at timestamptz NOT NULL,
            task_id uuid NOT NULL,
            fired_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (schedule_id, occurrence_at)
        )
    """)
    # Retention deletes a task's occurrence record with the task.
    op.execute("CREATE INDEX IF NOT EXISTS schedule_occurrences_task ON schedule_occurrences (task_id)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS schedule_occurrences")
    op.execute("DROP TABLE IF EXISTS schedules")
