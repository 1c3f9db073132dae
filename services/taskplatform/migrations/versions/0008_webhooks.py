"""webhooks: a tenant's subscriptions, the outbox of task events, deliveries and their log

Revision ID: 0008

Expand-only: four new tables, and a trigger on ``tasks`` that writes to them. A release before
this one neither reads nor writes the tables; its workers' status changes fire the trigger as
this release's do, so during a blue/green switch no event is missed whichever colour finishes a
task. The app role gets the rows by the default privileges ``db-setup`` gave it; the trigger's
function runs as the role that changes the task (not SECURITY DEFINER): it needs nothing the app
role lacks.

The outbox is the trigger: an event (and one delivery per subscription that wants it) is written
by the very UPDATE that changes the task's status, in its transaction. So a committed change has
its event, a rolled-back one has none, and no code path that changes a status can forget it
(complete, fail, a claim or lease expiry that ends a task dead, cancel — today's and those to
come). The HTTP request is made later by the workers' dispatcher (``webhook_dispatch``), outside
that transaction. A tenant without subscriptions costs one index probe per status change.

Events: ``task.succeeded``, ``task.failed`` (an attempt failed and the task will be retried:
``retry_wait``), ``task.dead`` (no attempts left), ``task.cancelled``. The event keeps the task
as it was then (``task``): a later retry, re-drive or retention does not change what was sent.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _subscriptions_and_events()
    _deliveries()
    _trigger()


def _subscriptions_and_events() -> None:
    op.execute("""
        CREATE TABLE IF NOT EXISTS webhook_subscriptions (
            id uuid PRIMARY KEY,
            tenant text NOT NULL,
            url text NOT NULL,
            events text[] NOT NULL CHECK (cardinality(events) > 0),
            description text NOT NULL DEFAULT '',
            -- Kept as it is, not hashed: the dispatcher signs every delivery with it (HMAC), so it
            -- must be able to read it. Shown once, in the create's answer.
            secret text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
    """)
    op.execute("CREATE INDEX IF NOT EXISTS webhook_subscriptions_tenant_page "
               "ON webhook_subscriptions (tenant, created_at DESC, id DESC)")
    op.execute("""
        CREATE TABLE IF NOT EXISTS webhook_events (
            id uuid PRIMARY KEY,  -- the idempotency id a receiver sees: Shipyard-Event-Id
            tenant text NOT NULL,
            type text NOT NULL,
            task_id uuid NOT NULL,
            task jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
    """)


def _deliveries() -> None:
    op.execute("""
        CREATE TABLE IF NOT EXISTS webhook_deliveries (
            id uuid PRIMARY KEY,
            subscription_id uuid NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
            event_id uuid NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
            status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            lease_until timestamptz,
            lease_token uuid,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            UNIQUE (subscription_id, event_id)
        )
    """)
    # What the dispatchers look for: small, only the deliveries still to make.
    op.execute("CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) "
               "WHERE status = 'pending'")
    op.execute("CREATE INDEX IF NOT EXISTS webhook_deliveries_page "
               "ON webhook_deliveries (subscription_id, created_at DESC, id DESC)")
    op.execute("CREATE INDEX IF NOT EXISTS webhook_deliveries_event ON webhook_deliveries (event_id)")
    op.execute("""
        CREATE TABLE IF NOT EXISTS webhook_attempts (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
            attempt integer NOT NULL,
            status_code integer,
            error text,
            duration_ms double precision NOT NULL,
            at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
    """)
    op.execute("CREATE INDEX IF NOT EXISTS webhook_attempts_delivery ON webhook_attempts (delivery_id, id DESC)")


def _trigger() -> None:
    op.execute("""
        CREATE OR REPLACE FUNCTION webhook_task_event() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            v_type text := CASE NEW.status WHEN 'succeeded' THEN 'task.succeeded'
                WHEN 'retry_wait' THEN 'task.failed' WHEN 'dead' THEN 'task.dead'
                WHEN 'cancelled' THEN 'task.cancelled' END;
            v_event uuid;
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM webhook_subscriptions
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
            RETURN NULL;
        END $$
    """)
    op.execute("DROP TRIGGER IF EXISTS tasks_webhook_events ON tasks")
    op.execute("""
        CREATE TRIGGER tasks_webhook_events AFTER UPDATE OF status ON tasks FOR EACH ROW
        WHEN (NEW.status IS DISTINCT FROM OLD.status
              AND NEW.status IN ('succeeded', 'retry_wait', 'dead', 'cancelled'))
        EXECUTE FUNCTION webhook_task_event()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS tasks_webhook_events ON tasks")
    op.execute("DROP FUNCTION IF EXISTS webhook_task_event()")
    for table in ("webhook_attempts", "webhook_deliveries", "webhook_events", "webhook_subscriptions"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
