"""What to ask Patroni for, decided from what its REST API reports (docs/data-tier.md, "Switchover and rebuild", "Settings reaching a running cluster"). Pure: the
documents of ``GET /cluster`` and ``GET /config`` and the rendered ``patroni.yml`` in, a decision
or a ShipyardError (where, what, the fix) out. patroni_api.py makes the calls.

- ``choose_switchover``: which node leads next (``make pg-promote [TO=]``), and whether by a
  switchover (the leader runs: it hands over) or a failover (``FORCE=1``, the leader is dead);
- ``check_reinit``: whether a node may be cloned again (``make pg-rebuild NODE=``);
- ``config_changes`` / ``restart_plan``: how the cluster's dynamic configuration differs from
  the settings' (the rendered ``bootstrap.dcs``, which Patroni reads only at the cluster's first
  start), which changes apply live and which need PostgreSQL restarted, and in what order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import yaml

from shipyard.errors import ShipyardError

LEADER_ROLES = ("leader", "master", "primary")
# Patroni 3.0 says "running" for a replica that streams; later versions say "streaming".
RUNNING_STATES = ("running", "streaming")
# PostgreSQL contexts whose parameters a reload applies (backend ones: to new sessions).
LIVE_CONTEXTS = ("user", "superuser", "sighup", "backend", "superuser-backend")
# A standby refuses to run with less of these than its primary has (the value is in the WAL
# and pg_control): a *lowered* one must reach the primary first, so the leader restarts in
# place before the replicas; a raised one reaches the replicas first (PostgreSQL's rule, "Hot
# Standby" in its docs; Patroni starts a replica with pg_control's value meanwhile).
STANDBY_MINIMUMS = ("max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions",
                    "max_locks_per_transaction")
# Keys of the dynamic configuration the settings own. Others (``pause`` from `patronictl
# pause`, ``failsafe_mode``...) are an operator's and are left alone.
OWNED_KEYS = ("ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "synchronous_mode", "failsafe_mode",
              "slots", "postgresql")


def members(cluster: dict) -> dict[str, dict]:
    return {m["name"]: m for m in cluster.get("members", [])}


def leader_of(cluster: dict) -> str | None:
    return next((m["name"] for m in cluster.get("members", []) if m.get("role") in LEADER_ROLES), None)


def healthy_replica(member: dict, max_lag_bytes: int) -> str | None:
    """Why ``member`` cannot take over (None: it can): it must run, know its lag, be within
    ``max_lag_bytes`` (Patroni's maximum_lag_on_failover) and not be tagged nofailover."""
    if member.get("role") in LEADER_ROLES:
        return "it is the leader"
    if member.get("state") not in RUNNING_STATES:
        return f"its state is {member.get('state', 'unknown')}"
    lag = member.get("lag")
    if not isinstance(lag, int):
        return f"its lag is {lag or 'unknown'}"
    if too_far_behind(member, max_lag_bytes):
        return f"it is {lag} bytes behind, over maximum_lag_on_failover ({max_lag_bytes})"
    if (member.get("tags") or {}).get("nofailover"):
        return _NOFAILOVER
    return None


# A node that joins with no data yet, until its clone is done and it is a healthy replica
# (files/postgres/patroni-node.sh): it may not initialise the cluster, nor take it over.
_NOFAILOVER = "it is tagged nofailover (still joining: cloned and healthy, it may take over)"


def too_far_behind(member: dict, max_lag_bytes: int) -> bool:
    lag = member.get("lag")
    return isinstance(lag, int) and lag > max_lag_bytes


def held_back_by_lag(cluster: dict, to: str | None, max_lag_bytes: int) -> bool:
    """Whether a switchover to ``to`` (or to any replica) is kept back only by lag: no candidate
    could take over, and one runs but is over ``max_lag_bytes``. Patroni's view of a replica's
    lag moves once a loop: right after the leader switched WAL segments (a backup does) a
    replica that streams shows a segment behind (16 MB) until the next one."""
    found = members(cluster)
    leader = leader_of(cluster)
    names = [n for n in ([to] if to is not None else found) if n in found and n != leader]
    if any(healthy_replica(found[n], max_lag_bytes) is None for n in names):
        return False
    return any(found[n].get("state") in RUNNING_STATES and too_far_behind(found[n], max_lag_bytes) for n in names)


@dataclass(frozen=True)
class Switch:
    """``switchover``: the running ``leader`` hands over to ``candidate`` (no acknowledged
    commit lost); ``failover``: the leader is dead, ``candidate`` is promoted (what it had not
    received is lost)."""

    action: Literal["switchover", "failover"]
    leader: str | None
    candidate: str


def choose_switchover(env: str, cluster: dict, to: str | None, leader_answers: bool, force: bool,
                      max_lag_bytes: int) -> Switch:
    """The switchover (or failover) `make pg-promote ENV=env [TO=to] [FORCE=1]` asks for.
    ``leader_answers``: the leader's own REST API answered (a dead node's member key outlives
    it by up to ttl). Default candidate: the synchronous standby, else the healthy replica with
    the least lag."""
    where = f"environment {env}"
    found = members(cluster)
    leader = leader_of(cluster)
    promote = f"make pg-promote ENV={env}"
    if to is not None and to not in found:
        raise ShipyardError(where, f"{to} is not a member of the Patroni cluster (members: "
                            f"{', '.join(sorted(found)) or 'none'})",
                            f"name a member: {promote} TO=<node>; a node that is not listed is not running "
                            f"(make status ENV={env})")
    if to is not None and to == leader:
        raise ShipyardError(f"{where}, node {to}", "is already the leader",
                            f"name a replica: {', '.join(sorted(n for n in found if n != to)) or 'none'}")
    if leader is None and not force:
        raise ShipyardError(where, "the Patroni cluster has no leader (an election is under way, or no node may lead)",
                            f"wait ttl_s and look again (make status ENV={env}); to promote a replica anyway: "
                            f"{promote} TO=<node> FORCE=1 (what it had not received is lost)")
    if leader is not None and not leader_answers and not force:
        raise ShipyardError(f"{where}, node {leader}",
                            "is the leader in etcd but its REST API does not answer (dead?): a switchover needs it",
                            f"Patroni fails over by itself once its key expires (ttl_s); to fail over now: {promote} "
                            f"TO=<node> FORCE=1 (what it had not sent is lost)")
    action: Literal["switchover", "failover"] = "switchover" if leader is not None and leader_answers else "failover"
    sync = sorted(n for n, m in found.items() if m.get("role") == "sync_standby")
    why_not = {n: healthy_replica(m, max_lag_bytes) for n, m in found.items() if n != leader}
    if to is not None:
        if why_not[to] == _NOFAILOVER:
            others = sorted(n for n, why in why_not.items() if why is None)
            raise ShipyardError(f"{where}, node {to}", f"cannot take over: {why_not[to]}",
                                f"name a node that may lead ({', '.join(others) or 'none is healthy now'}), or leave "
                                "TO out")
        if why_not[to]:
            raise ShipyardError(f"{where}, node {to}", f"cannot take over: {why_not[to]}",
                                f"wait until it streams within the lag limit (make status ENV={env}), or rebuild it: "
                                f"make pg-rebuild ENV={env} NODE={to}")
        if action == "switchover" and sync and to not in sync:
            # Patroni refuses it too ("candidate name does not match with sync_standby"): only
            # the synchronous standby surely holds every acknowledged commit.
            raise ShipyardError(f"{where}, node {to}",
                                f"is not the synchronous standby ({', '.join(sync)}): under synchronous mode only "
                                f"it holds every acknowledged commit",
                                f"{promote} TO={sync[0]}, or leave TO out")
        return Switch(action, leader, to)
    healthy = [n for n, why in why_not.items() if why is None]
    if not healthy:
        detail = "; ".join(f"{n}: {why}" for n, why in sorted(why_not.items())) or "no other member"
        raise ShipyardError(where, f"no healthy replica to hand over to ({detail})",
                            f"bring a replica back first (make up ENV={env}; make pg-rebuild ENV={env} NODE=<node>)")
    preferred = [n for n in healthy if n in sync] or healthy
    return Switch(action, leader, min(preferred, key=lambda n: (found[n]["lag"], n)))


def check_reinit(env: str, cluster: dict, node: str) -> str:
    """Refuses `make pg-rebuild NODE=node` unless ``node`` is a member and not the leader, and
    there is a leader to clone from. Returns the leader."""
    found = members(cluster)
    leader = leader_of(cluster)
    if node not in found:
        raise ShipyardError(f"environment {env}", f"{node} is not a member of the Patroni cluster (members: "
                            f"{', '.join(sorted(found)) or 'none'})",
                            f"start it first (make up ENV={env}): a node Patroni does not run cannot be reinitialised")
    if node == leader:
        raise ShipyardError(f"environment {env}, node {node}", "is the leader: rebuilding it would wipe the only "
                            "writable copy", f"hand over first (make pg-promote ENV={env}), then rebuild it")
    if leader is None:
        raise ShipyardError(f"environment {env}", "the Patroni cluster has no leader to clone from",
                            f"wait for one (make status ENV={env}), then retry")
    return leader


# --- The dynamic configuration ---------------------------------------------------------------


def desired_config(patroni_yml: str) -> dict[str, Any]:
    """The dynamic configuration the settings want: ``bootstrap.dcs`` of the rendered patroni.yml
    (one source: the template a new cluster starts from is the one a running cluster is kept at)."""
    return yaml.safe_load(patroni_yml)["bootstrap"]["dcs"]


Applies = Literal["live", "restart", "unknown"]


@dataclass(frozen=True)
class ConfigChange:
    key: str  # dotted: ttl, postgresql.parameters.max_connections
    have: Any  # None: not set on the cluster
    want: Any  # None: to be removed
    applies: Applies

    @property
    def parameter(self) -> str | None:
        prefix = "postgresql.parameters."
        return self.key[len(prefix):] if self.key.startswith(prefix) else None

    def line(self) -> str:
        how = {"live": "applies live (reload, no restart)",
               "restart": "needs a restart of PostgreSQL on every node (pending_restart)",
               "unknown": "unknown context: not read from a running node"}[self.applies]
        have = "(unset)" if self.have is None else self.have
        want = "(removed)" if self.want is None else self.want
        return f"{self.key}: {have} -> {want}: {how}"


def _same(have: Any, want: Any) -> bool:
    # Stored as JSON by Patroni, written from YAML by us: 128MB and "128MB", 1 and "1", on and "on".
    if isinstance(have, bool) or isinstance(want, bool):
        return have == want
    return str(have) == str(want)


def _flatten(doc: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= _flatten(value, f"{path}.")
        else:
            out[path] = value
    return out


def config_changes(desired: dict, observed: dict, contexts: dict[str, str] | None) -> list[ConfigChange]:
    """What differs between the settings' dynamic configuration and the cluster's (``GET
    /config``), key by key. ``contexts``: pg_settings name → context, read from a running node
    (None: not read; parameters' changes are then "unknown"). A PostgreSQL parameter the settings
    no longer name is removed; keys outside ``OWNED_KEYS`` are the operator's and left alone."""
    want = _flatten({k: v for k, v in desired.items() if k in OWNED_KEYS})
    have = _flatten({k: v for k, v in observed.items() if k in OWNED_KEYS})
    # A permanent slot the settings no longer name goes as a whole (Patroni then drops it on the
    # leader; kept, it would hold WAL back for a reader that is gone).
    wanted_slots = set((desired.get("slots") or {}))
    gone_slots = sorted(set((observed.get("slots") or {})) - wanted_slots)
    have = {k: v for k, v in have.items() if not any(k.startswith(f"slots.{slot}.") for slot in gone_slots)}
    changes = [ConfigChange(f"slots.{slot}", (observed.get("slots") or {})[slot], None, "live") for slot in gone_slots]
    for key in sorted(set(want) | {k for k in have if k.startswith("postgresql.parameters.")}):
        if key in have and key in want and _same(have[key], want[key]):
            continue
        change = ConfigChange(key, have.get(key), want.get(key), "live")
        name = change.parameter
        if name is not None:
            context = (contexts or {}).get(name.lower())
            applies: Applies = ("unknown" if context is None else "restart" if context == "postmaster" else "live")
            change = ConfigChange(key, change.have, change.want, applies)
        changes.append(change)
    return changes


def config_patch(changes: list[ConfigChange]) -> dict[str, Any]:
    """The body of ``PATCH /config`` making them (a None value removes the key: Patroni's
    patch_config)."""
    patch: dict[str, Any] = {}
    for change in changes:
        *parents, last = change.key.split(".")
        node = patch
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = change.want
    return patch


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RestartStep:
    """``restart``: PostgreSQL restarted on ``node`` by its Patroni (POST /restart); ``switchover``:
    the leader hands over to ``node`` first, so that it restarts as a replica."""

    action: Literal["restart", "switchover"]
    node: str


def restart_plan(cluster: dict, pending: set[str], lowered: set[str], max_lag_bytes: int) -> list[RestartStep]:
    """The order in which the ``pending`` members restart. Replicas one at a time, then the
    leader by a switchover to a restarted healthy replica (writes pause for the handover, not for
    a restart) and a restart of it as a replica. With a ``lowered`` standby minimum (max_connections
    & co.), the leader restarts in place first (a standby cannot run below its primary's value),
    then the replicas."""
    found = members(cluster)
    leader = leader_of(cluster)
    replicas = sorted(n for n in pending if n != leader)
    # The synchronous standby last among the replicas: a commit waits while it restarts.
    replicas.sort(key=lambda n: found.get(n, {}).get("role") == "sync_standby")
    if leader not in pending:
        return [RestartStep("restart", n) for n in replicas]
    if lowered:
        return [RestartStep("restart", leader), *(RestartStep("restart", n) for n in replicas)]
    sync = [n for n, m in found.items() if m.get("role") == "sync_standby"]
    takers = [n for n in (sync or sorted(found)) if n != leader and healthy_replica(found[n], max_lag_bytes) is None]
    steps = [RestartStep("restart", n) for n in replicas]
    if not takers:  # a single node, or no replica fit to lead: writes pause for the restart itself
        return [*steps, RestartStep("restart", leader)]
    return [*steps, RestartStep("switchover", takers[0]), RestartStep("restart", leader)]


def lowered_minimums(changes: list[ConfigChange]) -> set[str]:
    """The standby minimums (STANDBY_MINIMUMS) the changes lower."""
    out = set()
    for change in changes:
        if change.parameter in STANDBY_MINIMUMS:
            have, want = _number(change.have), _number(change.want)
            if have is not None and want is not None and want < have:
                out.add(change.parameter)
    return out


def plan_lines(changes: list[ConfigChange]) -> list[str]:
    """`make plan`'s lines for the dynamic configuration: one per change, saying how it applies."""
    lines = []
    for change in changes:
        line = f"Patroni dynamic configuration {change.line()}"
        if change.applies != "live":
            line += ("; the deploy then restarts PostgreSQL node by node (replicas first, the leader by a switchover"
                     + ("; lowered: the leader in place first" if lowered_minimums([change]) else "") + ")")
        lines.append(line)
    return lines
