"""`make status`: each PostgreSQL node as Patroni sees it, from its REST API in the node
(leader and members, or role of which leader, state, timeline, lag): which node leads changes
at run time."""

from __future__ import annotations

import json

from shipyard.components.postgres import patroni


def describe(settings, containers: dict) -> dict[str, str]:
    """instance name → role text, for the running containers given."""
    out = {}
    for name, container in containers.items():
        if container.status != "running" or "-exporter" in name:  # exporters: their scrape says
            continue
        out[name] = _patroni_view(name, container)
    return out


# The node's own REST API, read inside its container (published only for nodes on other hosts).
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
    # A node still joining (files/postgres/patroni-node.sh): no failover candidate until it has cloned.
    never = ", joining: not a failover candidate yet (nofailover)" if (me.get("tags") or {}).get("nofailover") else ""
    return (f"Patroni {me.get('role', '?')} of {leader or 'NO LEADER'}, {me.get('state', '?')}, {timeline}, "
            f"lag {lag_text}{never}")


def _patroni_view(name: str, container) -> str:
    result = container.exec_run(["python3", "-c", _CLUSTER])
    text = (result.output or b"").decode(errors="replace").strip()
    if result.exit_code != 0:
        return f"Patroni's REST API does not answer: {text[-200:]}"
    return patroni_line(name, json.loads(text))
