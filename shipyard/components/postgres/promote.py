"""`make pg-promote` (a replica becomes the primary) and `make pg-rebuild` (a node is cloned
again from the primary).

A promotion is a planned switchover that loses no committed transaction:
1. the old primary is stopped with a fast shutdown (SIGINT, the image's stop signal), which
   sends every WAL record, up to its shutdown checkpoint, to the connected replicas;
2. its data is fenced (standby.signal), so no restart and no `make up` can bring it back as a
   second primary;
3. the chosen replica must have replayed past that shutdown checkpoint, else the drill undoes
   steps 1-2 and stops: nothing changed;
4. `pg_ctl promote`, then slots on the new primary for the other replicas, which follow on
   their own (their primary_conninfo lists every node, target_session_attrs=read-write);
5. the old primary is rebuilt as a replica: data wiped, cloned again by its own node.sh.
The app finds the new primary the same way (every node in TASKS_PG_HOSTS, read-write).

When no node accepts writes (the primary died), steps 1-3 cannot be done: the promotion then
needs ``force`` (commits the replica had not received are lost, and the operator says so);
the dead nodes are stopped and fenced first, and rebuilt as replicas after.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import docker.errors

from shipyard.components.postgres import CONF, PGDATA, slot_name
from shipyard.components.postgres.instances import node_names as postgres_nodes
from shipyard.controller.drills import container_of, in_volumes_of, require_local, run_in, start, stop
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings

# As the replication role, through the node's own passfile (what cluster.sh's pg_ask does).
_CONNINFO = ("host=127.0.0.1 port=5432 user=replicator dbname=postgres connect_timeout=2 "
             "passfile=/run/secrets/replication_pgpass")
_DATA_SH = f"{CONF}/data.sh"  # operations on a stopped node's data (files/postgres/data.sh)


@dataclass(frozen=True)
class Promotion:
    old_primary: str
    new_primary: str
    writes_unavailable_s: float | None  # old primary stopped → a write succeeds (None: it was dead already)
    promote_s: float  # pg_ctl promote → a write succeeds on the new primary
    rebuild_s: float  # old primary wiped → streaming from the new one


def ask(settings: EnvironmentSettings, node: str, sql: str) -> str | None:
    """``sql`` on ``node`` as the replication role (the node's own passfile); None when it does
    not answer or the statement fails."""
    try:
        code, out, _ = run_in(settings, node, ["psql", _CONNINFO, "-qtAX", "-v", "ON_ERROR_STOP=1", "-c", sql])
    except (ShipyardError, docker.errors.DockerException):
        return None  # no running container, or it went away meanwhile
    return out.strip() if code == 0 else None


def roles(settings: EnvironmentSettings) -> dict[str, str]:
    """node → "primary", "replica" or "down", from each node's pg_is_in_recovery()."""
    answers = {node: ask(settings, node, "SELECT pg_is_in_recovery()") for node in postgres_nodes(settings)}
    return {node: {"f": "primary", "t": "replica"}.get(answer or "", "down") for node, answer in answers.items()}


def primary_of(settings: EnvironmentSettings) -> str:
    primaries = [node for node, role in roles(settings).items() if role == "primary"]
    if len(primaries) != 1:
        raise ShipyardError(f"environment {settings.name}", f"expected one PostgreSQL primary, found {primaries or 'none'}",
                            f"bring the data tier back first: make up ENV={settings.name}")
    return primaries[0]


def _accepts_writes(settings: EnvironmentSettings, node: str) -> bool:
    # Assigning a transaction id is refused during recovery: the smallest real write.
    return ask(settings, node, "SELECT pg_current_xact_id()") not in (None, "")


def _streaming_from(settings: EnvironmentSettings, node: str) -> str | None:
    """The node ``node`` streams WAL from, or None when it does not stream."""
    answer = ask(settings, node, "SELECT sender_host FROM pg_stat_wal_receiver WHERE status = 'streaming'")
    return answer or None


def _wait(what: str, check, timeout_s: float, interval_s: float = 0.1) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(interval_s)
    raise TimeoutError(what)


def _on_data(settings: EnvironmentSettings, node: str, operation: str) -> tuple[int, str, str]:
    """``data.sh <operation>`` on the stopped ``node``'s data, as the postgres user, in a
    throwaway container with its volumes: (exit code, stdout, stderr)."""
    return in_volumes_of(settings, node, ["bash", _DATA_SH, operation], user="postgres", environment={"PGDATA": PGDATA})


def _checked(settings: EnvironmentSettings, node: str, operation: str) -> str:
    code, out, err = _on_data(settings, node, operation)
    if code != 0:
        raise ShipyardError(f"environment {settings.name}, node {node}", f"data.sh {operation} failed: {err.strip()[-300:]}",
                            "check the node's volume (docker volume inspect) and retry")
    return out


def _system_identifier(settings: EnvironmentSettings, node: str) -> str | None:
    """Which cluster ``node``'s data belongs to (pg_controldata); None when it has no data."""
    return _checked(settings, node, "identify").strip() or None


def _fence(settings: EnvironmentSettings, node: str) -> str:
    """Mark the stopped ``node``'s data as a standby; return its shutdown checkpoint LSN.
    Raises when the server did not shut down cleanly (then replicas may lack commits)."""
    code, out, err = _on_data(settings, node, "fence")
    state = re.search(r"^Database cluster state:\s+(.+)$", out, re.M)
    checkpoint = re.search(r"^Latest checkpoint location:\s+(\S+)$", out, re.M)
    if code != 0 or not state or not checkpoint or state.group(1) != "shut down":
        raise ShipyardError(f"environment {settings.name}, node {node}",
                            f"did not shut down cleanly ({state.group(1) if state else err.strip()[-300:]})",
                            "a replica may lack its last commits; start it again and retry the promotion")
    return checkpoint.group(1)


def _unfence(settings: EnvironmentSettings, node: str) -> None:
    _checked(settings, node, "unfence")
    start(settings, node)


def lsn_value(lsn: str) -> int:
    """A WAL location as PostgreSQL prints it ('16/B374D848') as a number, to compare."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def further_than(replayed: dict[str, str | None], chosen: str) -> list[str]:
    """The replicas that replayed more WAL than ``chosen`` (node → pg_last_wal_replay_lsn(),
    None when it did not answer), furthest first."""
    mine = replayed.get(chosen)
    if not mine:
        return []
    ahead = [node for node, lsn in replayed.items() if lsn and lsn_value(lsn) > lsn_value(mine)]
    return sorted(ahead, key=lambda node: lsn_value(replayed[node] or "0/0"), reverse=True)


def check_node(settings: EnvironmentSettings, node: str) -> None:
    """Raises unless ``node`` is a PostgreSQL node of the environment (checked before any lock)."""
    require_local(settings)
    if node not in postgres_nodes(settings):
        raise ShipyardError(f"environment {settings.name}", f"has no PostgreSQL node {node!r}",
                            f"name one of: {', '.join(postgres_nodes(settings))}")


def pg_promote(settings: EnvironmentSettings, replica: str, timeout_s: float = 60, force: bool = False) -> Promotion:
    """Make ``replica`` the primary. With the primary running: a planned switchover that loses
    no commit. With no primary answering (it died): only with ``force``, since commits the
    replica had not received yet are lost; the dead nodes are fenced, then rebuilt."""
    check_node(settings, replica)
    nodes = postgres_nodes(settings)
    states = roles(settings)
    primaries = [node for node, role in states.items() if role == "primary"]
    if replica in primaries:
        raise ShipyardError(f"environment {settings.name}, node {replica}", "is already the primary",
                            f"name a replica: {', '.join(n for n in nodes if n != replica)}")
    if states[replica] != "replica":
        raise ShipyardError(f"environment {settings.name}, node {replica}", "does not answer as a replica",
                            f"start it first: make up ENV={settings.name}")
    if len(primaries) > 1:
        raise ShipyardError(f"environment {settings.name}", f"several nodes accept writes: {primaries}",
                            "stop all but one and rebuild the others with make pg-rebuild")
    if primaries:
        old, stopped = primaries[0], time.monotonic()
        _switch_over_from(settings, old, replica, timeout_s)
        dead: list[str] = []
    else:
        dead = [node for node, role in states.items() if role == "down"]
        if not force:
            raise ShipyardError(f"environment {settings.name}", f"no PostgreSQL node accepts writes (down: "
                                f"{', '.join(dead)})", f"start the primary again (make up ENV={settings.name}); if it "
                                f"cannot come back, promote anyway with FORCE=1: commits {replica} had not received "
                                f"are lost")
        # With the primary gone, the replica that replayed most holds most commits; promoting
        # another would lose them, and the one further ahead could not follow the new timeline.
        replayed = {node: ask(settings, node, "SELECT pg_last_wal_replay_lsn()")
                    for node, role in states.items() if role == "replica"}
        ahead = further_than(replayed, replica)
        if ahead:
            raise ShipyardError(f"environment {settings.name}, node {replica}",
                                f"has replayed WAL up to {replayed[replica]}, {ahead[0]} further "
                                f"({replayed[ahead[0]]}): promoting {replica} would lose what only {ahead[0]} has",
                                f"promote {ahead[0]}: make pg-promote ENV={settings.name} REPLICA={ahead[0]} FORCE=1")
        old, stopped = ", ".join(dead), None
        for node in dead:
            stop(settings, node)  # one in a restart loop must not come back as a primary meanwhile
            _checked(settings, node, "fence-if-data")
    promote_s = _promote(settings, replica, old, timeout_s)
    writes_unavailable_s = time.monotonic() - stopped if stopped is not None else None
    # Slots are not replicated: the new primary gets one for each replica that follows it, so
    # it keeps the WAL they still need. (Rebuilt nodes create their own when they clone.)
    followers = [node for node in nodes if node != replica and node not in dead and node not in primaries]
    for node in followers:
        created = ask(settings, replica, f"SELECT count(*) FROM (SELECT pg_create_physical_replication_slot("
                                         f"'{slot_name(node)}', true) WHERE NOT EXISTS (SELECT 1 FROM "
                                         f"pg_replication_slots WHERE slot_name = '{slot_name(node)}')) AS made")
        if created is None:
            # Without its slot the new primary may recycle WAL the follower still needs.
            raise ShipyardError(f"environment {settings.name}, node {replica}",
                                f"is the primary now, but creating the slot of {node} failed",
                                f"create it: SELECT pg_create_physical_replication_slot('{slot_name(node)}', true); "
                                f"or rebuild {node}: make pg-rebuild ENV={settings.name} NODE={node}")
    rebuild_s = sum(pg_rebuild(settings, node, timeout_s=timeout_s * 2) for node in primaries + dead)
    for node in followers:
        _wait_streaming(settings, node, replica, timeout_s)
    return Promotion(old, replica, writes_unavailable_s, promote_s, rebuild_s)


def _switch_over_from(settings: EnvironmentSettings, old: str, replica: str, timeout_s: float) -> None:
    """Stop and fence the running primary ``old`` once ``replica`` has everything it wrote;
    when that cannot be shown, put ``old`` back and raise (nothing changed)."""
    if _streaming_from(settings, replica) is None:
        raise ShipyardError(f"environment {settings.name}, node {replica}", "is not streaming from the primary, so it "
                            "may lack commits", f"check `make verify ENV={settings.name}`; rebuild it with "
                            f"make pg-rebuild ENV={settings.name} NODE={replica}")
    stop(settings, old)
    checkpoint = "?"
    try:
        checkpoint = _fence(settings, old)
        _wait("caught up", lambda: ask(settings, replica, f"SELECT pg_last_wal_replay_lsn() > '{checkpoint}'") == "t",
              timeout_s)
    except (ShipyardError, TimeoutError, docker.errors.DockerException) as exc:
        _unfence(settings, old)
        if isinstance(exc, ShipyardError):
            raise
        if isinstance(exc, docker.errors.DockerException):
            raise ShipyardError(f"environment {settings.name}, node {old}", f"switchover stopped: {exc}; nothing was "
                                f"changed, {old} is the primary again", "retry; check the Docker engine") from None
        raise ShipyardError(f"environment {settings.name}, node {replica}",
                            f"did not replay the old primary's last WAL ({checkpoint}) within {timeout_s}s; "
                            f"nothing was changed, {old} is the primary again",
                            "look at the replica's logs; retry when it streams without lag") from None


def _promote(settings: EnvironmentSettings, replica: str, old: str, timeout_s: float) -> float:
    """pg_ctl promote; seconds until ``replica`` accepts a write."""
    promoting = time.monotonic()
    _, out, err = run_in(settings, replica, ["pg_ctl", "promote", "-D", PGDATA, "-w", "-t", str(int(timeout_s))],
                         user="postgres")
    try:
        _wait("writes", lambda: _accepts_writes(settings, replica), timeout_s, 0.05)
    except TimeoutError:
        # The old primary stays fenced: its data must not come back as a second primary.
        raise ShipyardError(f"environment {settings.name}, node {replica}",
                            f"does not accept writes {timeout_s}s after pg_ctl promote "
                            f"({(out + err).strip()[-300:]}); {old} is stopped and fenced",
                            f"look at docker logs {container_of(settings, replica)}; once it is the primary, "
                            f"run make pg-rebuild ENV={settings.name} NODE=<each old node>") from None
    return time.monotonic() - promoting


def _wait_streaming(settings: EnvironmentSettings, node: str, primary: str, timeout_s: float) -> float:
    try:
        return _wait("streaming", lambda: _streaming_from(settings, node) == primary, timeout_s, 0.2)
    except TimeoutError:
        raise ShipyardError(f"environment {settings.name}, node {node}",
                            f"does not stream from the primary {primary} after {timeout_s}s",
                            f"look at its logs (docker logs {container_of(settings, node, running=False)}); "
                            f"rebuild it: make pg-rebuild ENV={settings.name} NODE={node}") from None


def pg_rebuild(settings: EnvironmentSettings, node: str, timeout_s: float = 120) -> float:
    """Wipe ``node``'s data and let its node.sh clone it again from the primary. Seconds taken."""
    check_node(settings, node)
    primary = primary_of(settings)
    if primary == node:
        raise ShipyardError(f"environment {settings.name}, node {node}", "is the primary: rebuilding it would wipe "
                            "the only writable copy", "promote a replica first: make pg-promote")
    mine = _system_identifier(settings, node)
    theirs = ask(settings, primary, "SELECT system_identifier FROM pg_control_system()")
    if mine and theirs and mine != theirs:
        raise ShipyardError(f"environment {settings.name}, node {node}",
                            f"holds another cluster (system identifier {mine}) than the primary {primary} ({theirs}): "
                            f"{primary} was initialised anew (a lost volume?) and {node} may hold the only copy of "
                            f"the data; nothing was changed",
                            f"if {node}'s data is the one to keep: stop {primary} (docker stop "
                            f"{container_of(settings, primary)}), restart {node} (it runs as the primary when no "
                            f"other node does), then make pg-rebuild ENV={settings.name} NODE={primary}")
    started = time.monotonic()
    stop(settings, node)
    _checked(settings, node, "wipe")  # and leaves the marker: node.sh clones, never initdb
    start(settings, node)
    _wait_streaming(settings, node, primary, timeout_s)
    return time.monotonic() - started
