"""`make status`: each PostgreSQL node's role as the nodes themselves report it (which one is
the primary changes at run time), replication lag, and the backups' state. Under
``postgres.ha: patroni``: Patroni's view from its REST API in each node (leader, members,
state, timeline, lag)."""

from __future__ import annotations

import json

from shipyard.components.postgres import CONF, patroni

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
        if settings.postgres.ha == "patroni":
            out[name] = _patroni_view(name, container)
            continue
        result = container.exec_run(["psql", _CONNINFO, "-qtAX", "-c", _ROLE_SQL])
        text = (result.output or b"").decode(errors="replace").strip()
        out[name] = text if result.exit_code == 0 else f"does not answer: {text[-200:]}"
    return out


# The node's own REST API, read inside its container (the port is published nowhere).
_CLUSTER = ("import json, urllib.request; "
            f"print(json.dumps(json.load(urllib.request.urlopen('http://127.0.0.1:{patroni.API_PORT}/cluster', timeout=3))))")


def patroni_line(name: str, cluster: dict) -> str:
    """One node's line from Patroni's /cluster (pure: tests feed it documents)."""
    members = {m["name"]: m for m in cluster.get("members", [])}
    me = members.get(name)
    if me is None:
        return f"Patroni: not a member of the cluster (members: {', '.join(sorted(members)) or 'none'})"
    leader = next((n for n, m in members.items() if m.get("role") in ("leader", "master", "primary")), None)
    timeline = f"timeline {me.get('timeline', '?')}"
    if name == leader:
        others = sorted(n for n in members if n != name)
        return f"Patroni leader, {me.get('state', '?')}, {timeline}, members: {', '.join(others) or 'none'}"
    lag = me.get("lag")
    lag_text = f"{lag} B" if isinstance(lag, int) else str(lag or "unknown")
    return (f"Patroni {me.get('role', '?')} of {leader or 'NO LEADER'}, {me.get('state', '?')}, {timeline}, "
            f"lag {lag_text}")


def _patroni_view(name: str, container) -> str:
    result = container.exec_run(["python3", "-c", _CLUSTER])
    text = (result.output or b"").decode(errors="replace").strip()
    if result.exit_code != 0:
        return f"Patroni's REST API does not answer: {text[-200:]}"
    return patroni_line(name, json.loads(text))
