"""Shipped by Shipyard (shipyard/components/postgres/files/): container health of a node under
Patroni, from Patroni's own REST API on the node (loopback, reads need
no credentials). Healthy: PostgreSQL runs (/health) and the node is ready (/readiness: the
leader, or a running node of a cluster that has one); a replica besides within
$PG_REPLICA_MAX_LAG_BYTES of the leader (/replica?lag=), and no longer tagged nofailover (a node
joining with no data wears the tag until it is a healthy replica: patroni-node.sh, which asks
with --joining, where the tag does not count, to know when to drop it). So a node is healthy —
and a rollout's gate passes — only once it may take over. The container health check runs it."""

import json
import os
import sys
import urllib.error
import urllib.request

API = "http://127.0.0.1:8008"


def get(path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{API}{path}", timeout=5) as reply:
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except OSError as error:
        return 0, {"error": str(error)}
    try:
        return status, json.loads(body or b"{}")
    except ValueError:
        return status, {}


def main() -> int:
    node = os.environ.get("PATRONI_NAME", "this node")
    status, state = get("/patroni")
    if status == 0:
        print(f"{node}: Patroni's REST API does not answer on {API}: {state['error']}")
        return 1
    role, pg_state = state.get("role", "?"), state.get("state", "?")
    if get("/health")[0] != 200:
        print(f"{node}: PostgreSQL is not running under Patroni (state {pg_state}, role {role})")
        return 1
    if "--joining" not in sys.argv[1:] and (state.get("tags") or {}).get("nofailover"):
        print(f"{node}: joining (tagged nofailover until it is a healthy replica; patroni-node.sh drops the tag)")
        return 1
    if get("/readiness")[0] != 200:
        print(f"{node}: not ready (state {pg_state}, role {role}; no leader in etcd?)")
        return 1
    if role in ("master", "primary"):
        return 0
    lag = int(os.environ.get("PG_REPLICA_MAX_LAG_BYTES", str(16 * 1024 * 1024)))
    if get(f"/replica?lag={lag}")[0] != 200:
        print(f"{node}: replica not streaming or more than {lag} bytes behind the leader (state {pg_state})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
