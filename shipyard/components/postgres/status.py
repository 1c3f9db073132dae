"""`make status`: each PostgreSQL node's role as the nodes themselves report it (which one is
the primary changes at run time), replication lag, and the backups' state."""

from __future__ import annotations

from shipyard.components.postgres import CONF

_CONNINFO = "host=127.0.0.1 user=replicator dbname=postgres connect_timeout=3 passfile=/run/secrets/replication_pgpass"
_ROLE_SQL = (
    "SELECT CASE WHEN pg_is_in_recovery() THEN 'replica' || coalesce(' of ' || (SELECT sender_host FROM "
    "pg_stat_wal_receiver WHERE status = 'streaming'), ', NOT streaming') || ', replay lag ' || "
    "pg_size_pretty(coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)) "
    "ELSE 'primary, streaming to ' || coalesce((SELECT string_agg(application_name, ', ' ORDER BY application_name) "
    "FROM pg_stat_replication WHERE state = 'streaming'), 'nobody') END")


def describe(settings, containers: dict) -> dict[str, str]:
    """instance name → role text, for the running containers given."""
    out = {}
    for name, container in containers.items():
        if container.status != "running" or "-exporter" in name:  # exporters: their scrape says
            continue
        if name == "postgres-backup":
            result = container.exec_run(["bash", f"{CONF}/backup.sh", "check"])
            text = (result.output or b"").decode(errors="replace").strip()
            out[name] = "backups current, WAL archive streaming" if result.exit_code == 0 else text
            continue
        result = container.exec_run(["psql", _CONNINFO, "-qtAX", "-c", _ROLE_SQL])
        text = (result.output or b"").decode(errors="replace").strip()
        out[name] = text if result.exit_code == 0 else f"does not answer: {text[-200:]}"
    return out
