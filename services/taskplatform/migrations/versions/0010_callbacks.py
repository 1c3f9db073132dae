"""a task's callback URL and its deliveries, webhook secret rotation, delivery-log retention

Revision ID: 0010

Expand-only: new nullable columns, a new table, a new trigger on ``tasks`` and indexes built
``CONCURRENTLY`` (as 0007's: a plain build would hold off every delivery's write while it reads
the table).

- ``tasks.callback_url``: where the task's terminal events (succeeded, dead, cancelled) are also
  POSTed. Nullable without a default: no rewrite; a release before this one inserts NULL.
- ``webhook_callback_secrets``: a tenant's signing secret for those callbacks (one per tenant:
  the receiver of a callback checks it without knowing which task it is about beforehand).
- ``previous_secret``, ``previous_secret_expires_at`` on the subscriptions and the callback
  secrets: a rotated-out secret still signs, beside the new one, until then.
- ``webhook_deliveries``: a callback's delivery has no subscription (``subscription_id`` NULL,
  ``callback_url`` and ``tenant`` set). Dropping the NOT NULL changes no row.
- A trigger on ``tasks`` writes a callback's event and delivery with the status change (the
  outbox, as 0008 says), beside 0008's, which is unchanged.

A release before this one during a blue/green switch: its dispatcher claims rows whose
``lease_until`` is NULL or past, and joins the subscriptions (inner): a callback delivery it took
would have an attempt counted and never be sent. A callback delivery that nobody holds therefore
keeps ``lease_until`` at ``infinity`` (``webhook_store``), which that claim never takes; this
release tells a held delivery by its ``lease_token``.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE tasks ADD COLUMN IF NOT EXISTS callback_url text")
    op.execute("ALTER TABLE webhook_subscriptions ADD COLUMN IF NOT EXISTS previous_secret text")
    op.execute("ALTER TABLE webhook_subscriptions ADD COLUMN IF NOT EXISTS previous_secret_expires_at timestamptz")
    op.execute("""
        CREATE TABLE IF NOT EXISTS webhook_callback_secrets (
            tenant text PRIMARY KEY,
            secret text NOT NULL,  -- as the subscriptions' (0008): the dispatcher signs with it
            previous_secret text,
            previous_secret_expires_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
    """)
    op.execute("ALTER TABLE webhook_deliveries ALTER COLUMN subscription_id DROP NOT NULL")
    op.execute("ALTER TABLE webhook_deliveries ADD COLUMN IF NOT EXISTS callback_url text")
    op.execute("ALTER TABLE webhook_deliveries ADD COLUMN IF NOT EXISTS tenant text")
    _trigger()
    with op.get_context().autocommit_block():
        # The tenant's callback deliveries, newest first (GET /v1/callbacks/deliveries), and the
        # finished deliveries by when they finished (retention).
        _index_concurrently("webhook_deliveries_callbacks", "(tenant, created_at DESC, id DESC) "
                                                            "WHERE subscription_id IS NULL")
        _index_concurrently("webhook_deliveries_finished", "(updated_at) WHERE status <> 'pending'")


def _index_concurrently(name: str, definition: str) -> None:
    """A build that failed half-way leaves an invalid index, which IF NOT EXISTS would keep."""
    invalid = op.get_bind().execute(sa.text(
        "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = :name AND NOT i.indisvalid"), {"name": name}).scalar()
    if invalid:
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON webhook_deliveries {definition}")


def _trigger() -> None:
    """A trigger of its own beside 0008's, which stays as it is: on a task's terminal status
    change, when it has a ``callback_url``, an event and its one delivery. Its ``WHEN`` is
    evaluated without calling the function, so a task without a callback costs nothing more. A
    status change that a subscription wants too has an event for each (each receiver sees its own
    event id, the same on each of its attempts)."""
    op.execute("""
        CREATE OR REPLACE FUNCTION webhook_task_callback() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            v_event uuid := gen_random_uuid();
        BEGIN
            INSERT INTO webhook_events (id, tenant, type, task_id, task)
            SELECT v_event, NEW.tenant, 'task.' || NEW.status, NEW.id, to_jsonb(snapshot) FROM (SELECT
                NEW.id, NEW.kind, NEW.status, NEW.attempts, NEW.max_attempts, NEW.result, NEW.error,
                NEW.created_at, NEW.updated_at, NEW.run_after) AS snapshot;
            -- Unheld: lease_until infinity, which the claim of a release before this one never takes.
            INSERT INTO webhook_deliveries (id, subscription_id, event_id, callback_url, tenant, lease_until)
            VALUES (gen_random_uuid(), NULL, v_event, NEW.callback_url, NEW.tenant, 'infinity');
            RETURN NULL;
        END $$
    """)
    op.execute("DROP TRIGGER IF EXISTS tasks_callback_events ON tasks")
    op.execute("""
        CREATE TRIGGER tasks_callback_events AFTER UPDATE OF status ON tasks FOR EACH ROW
        WHEN (NEW.callback_url IS NOT NULL AND NEW.status IS DISTINCT FROM OLD.status
              AND NEW.status IN ('succeeded', 'dead', 'cancelled'))
        EXECUTE FUNCTION webhook_task_callback()
    """)


def downgrade() -> None:
    # Expand-only: the columns, the table, the indexes and the trigger stay (the release before
    # this one never sets a callback_url, and its trigger never fires then).
    pass
