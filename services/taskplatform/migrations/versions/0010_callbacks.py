"""a task's callback URL and its deliveries, webhook secret rotation, delivery-log retention

Revision ID: 0010

Expand-only: new nullable columns, a new table, a replaced trigger function and an index built
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
- The trigger function writes a callback delivery too (the outbox, as 0008 says).

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
    """0008's function, and a delivery to the task's ``callback_url`` on its terminal events."""
    op.execute("""
        CREATE OR REPLACE FUNCTION webhook_task_event() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            v_type text := CASE NEW.status WHEN 'succeeded' THEN 'task.succeeded'
                WHEN 'retry_wait' THEN 'task.failed' WHEN 'dead' THEN 'task.dead'
                WHEN 'cancelled' THEN 'task.cancelled' END;
            v_callback boolean := NEW.callback_url IS NOT NULL
                AND NEW.status IN ('succeeded', 'dead', 'cancelled');
            v_event uuid;
        BEGIN
            IF NOT v_callback AND NOT EXISTS (SELECT 1 FROM webhook_subscriptions
                                              WHERE tenant = NEW.tenant AND v_type = ANY (events)) THEN
                RETURN NULL;
            END IF;
            v_event := gen_random_uuid();
            INSERT INTO webhook_events (id, tenant, type, task_id, task)
            VALUES (v_event, NEW.tenant, v_type, NEW.id, jsonb_build_object(
                'id', NEW.id, 'kind', NEW.kind, 'status', NEW.status, 'attempts', NEW.attempts,
                'max_attempts', NEW.max_attempts, 'result', NEW.result, 'error', NEW.error,
                'created_at', NEW.created_at, 'updated_at', NEW.updated_at, 'run_after', NEW.run_after));
            INSERT INTO webhook_deliveries (id, subscription_id, event_id)
            SELECT gen_random_uuid(), s.id, v_event FROM webhook_subscriptions s
            WHERE s.tenant = NEW.tenant AND v_type = ANY (s.events);
            IF v_callback THEN
                INSERT INTO webhook_deliveries (id, subscription_id, event_id, callback_url, tenant, lease_until)
                VALUES (gen_random_uuid(), NULL, v_event, NEW.callback_url, NEW.tenant, 'infinity');
            END IF;
            RETURN NULL;
        END $$
    """)


def downgrade() -> None:
    # Expand-only: the columns, the table, the indexes and the function stay (the release before
    # this one never sets a callback_url, for which the function does what 0008's did).
    pass
