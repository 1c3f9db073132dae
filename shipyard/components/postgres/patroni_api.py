"""Patroni's REST API, driven: `make pg-promote` (a switchover, or a
failover with ``FORCE=1``), `make pg-rebuild` (a reinit), `make pg-restart` and the deploy's
reconcile of the dynamic configuration. The decisions are patroni_decide.py's (pure); this is the
thin layer of calls and bounded waits.

The calls go through a ``Transport``: the deploy's reaches each node's API inside its container
(patroni_docker.py: asked on the node's loopback, its credentials are read in the container from
the 0400 fragment), tests/patroni's talks to real Patroni processes on loopback. Either way no
password passes through here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from shipyard.components.postgres import patroni_decide as decide
from shipyard.errors import ShipyardError

# A node name reaches SQL text below: only what the topology names ([a-z0-9-]).
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _name(name: str) -> str:
    """A member or parameter name, checked before it goes into SQL text."""
    if not name or not set(name.lower()) <= _NAME_CHARS:
        raise ValueError(f"not a node or parameter name: {name!r}")
    return name


class Transport(Protocol):
    def api(self, node: str, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
        """(HTTP status, body) of one request to ``node``'s REST API; changes (anything but GET)
        carry the API's credentials. Status 0: nothing answered (the body says why)."""

    def sql(self, node: str, query: str) -> list[list[str]] | None:
        """Rows of ``query`` on ``node``'s PostgreSQL (values as text), None when it does not answer."""


@dataclass(frozen=True)
class Switched:
    action: str  # switchover / failover
    old: str | None
    new: str
    answered_s: float  # request → Patroni's answer (it polls every second)
    writable_s: float  # request → the new leader out of recovery
    streaming_s: float | None  # request → the old leader streams from the new one (None: it is dead)


def _wait(what: str, check: Callable[[], Any], timeout_s: float, interval_s: float = 0.1) -> float:
    """Seconds until ``check()`` is truthy; TimeoutError(what) after ``timeout_s``."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(what)
        time.sleep(interval_s)


class Cluster:
    """One environment's Patroni cluster through ``transport``: ``nodes`` are its members' names."""

    def __init__(self, env: str, nodes: tuple[str, ...], transport: Transport, max_lag_bytes: int):
        self.env, self.nodes, self.transport, self.max_lag_bytes = env, nodes, transport, max_lag_bytes

    # --- reads ---------------------------------------------------------------------------

    def get(self, node: str, path: str) -> tuple[int, dict]:
        status, body = self.transport.api(node, "GET", path)
        try:
            return status, json.loads(body) if body.strip() else {}
        except ValueError:
            return status, {}

    def view(self) -> dict:
        """``GET /cluster`` from the first node that answers."""
        errors = []
        for node in self.nodes:
            status, doc = self.get(node, "/cluster")
            if status == 200 and "members" in doc:
                return doc
            errors.append(f"{node}: {status or 'no answer'}")
        raise ShipyardError(f"environment {self.env}", f"no Patroni REST API answers ({'; '.join(errors)})",
                            f"bring the data tier up: make up ENV={self.env}; look at make status ENV={self.env}")

    def config(self) -> dict:
        """``GET /config``: the cluster's dynamic configuration (from etcd)."""
        for node in self.nodes:
            status, doc = self.get(node, "/config")
            if status == 200:
                return doc
        raise ShipyardError(f"environment {self.env}", "no Patroni REST API answers GET /config",
                            f"bring the data tier up: make up ENV={self.env}")

    def contexts(self) -> dict[str, str] | None:
        """pg_settings name → context, from the first node that answers (None: none did)."""
        for node in self.nodes:
            rows = self.transport.sql(node, "SELECT name, context FROM pg_settings")
            if rows:
                return {name.lower(): context for name, context in rows}
        return None

    def _one(self, node: str, query: str) -> str | None:
        rows = self.transport.sql(node, query)
        return rows[0][0] if rows and rows[0] else None

    def writable(self, node: str) -> bool:
        return self._one(node, "SELECT NOT pg_is_in_recovery()") == "t"

    def streams(self, leader: str, node: str) -> bool:
        """``node`` streams from ``leader`` (the leader's pg_stat_replication; Patroni sets each
        member's name as its application_name)."""
        return self._one(leader, f"SELECT count(*) FROM pg_stat_replication WHERE application_name = '{_name(node)}' "
                                 f"AND state = 'streaming'") == "1"

    def wal_position(self, leader: str) -> str | None:
        """The leader's current WAL position (an LSN as text)."""
        return self._one(leader, "SELECT pg_current_wal_lsn()")

    def replayed(self, node: str, lsn: str) -> bool:
        """``node`` replayed the WAL up to ``lsn``."""
        return self._one(node, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn") == "t"

    def started_at(self, node: str) -> str | None:
        """When ``node``'s PostgreSQL started (Patroni's ``postmaster_start_time``): a restart or
        reinit is done once it differs."""
        status, doc = self.get(node, "/patroni")
        return doc.get("postmaster_start_time") if status == 200 else None

    # --- changes -------------------------------------------------------------------------

    def _post(self, node: str, path: str, body: dict) -> str:
        status, text = self.transport.api(node, "POST", path, body)
        if status != 200:
            raise ShipyardError(f"environment {self.env}, node {node}",
                                f"Patroni refused POST {path}: {status or 'no answer'} {text.strip()[-300:]}",
                                f"look at make status ENV={self.env} and the node's log "
                                f"(make logs ENV={self.env} SERVICE={node})")
        return text

    def _view_once(self, settled: Callable[[dict], Any], timeout_s: float = 30) -> dict:
        """The cluster's view once ``settled(view)``, or as it is after ``timeout_s``: the
        decision taken on it then says why it refuses."""
        try:
            _wait("the cluster's view to settle", lambda: settled(self.view()), timeout_s, 0.5)
        except TimeoutError:
            pass
        return self.view()

    def switch_over(self, to: str | None = None, force: bool = False, timeout_s: float = 60) -> Switched:
        """`make pg-promote`: a switchover through the leader's API (a failover through the
        candidate's when the leader is dead and ``force``); waits until the new leader is out of
        recovery and the old one streams from it."""
        view = self.view()
        leader = decide.leader_of(view)
        answers = leader is not None and self.get(leader, "/patroni")[0] == 200
        if answers and self.config().get("synchronous_mode"):
            # Synchronous mode: Patroni switches over to the sync standby only, and names one again
            # a loop or two after a replica restarted or rejoined (it answered 412 "candidate name
            # does not match with sync_standby" to a switchover right after a rolling restart).
            view = self._view_once(lambda v: any(m.get("role") == "sync_standby" for m in decide.members(v).values()))
        if decide.held_back_by_lag(view, to, self.max_lag_bytes):  # for a few of Patroni's loops
            view = self._view_once(lambda v: not decide.held_back_by_lag(v, to, self.max_lag_bytes))
        choice = decide.choose_switchover(self.env, view, to, answers, force, self.max_lag_bytes)
        started = time.monotonic()
        if choice.action == "switchover":
            text = self._post(choice.leader, "/switchover", {"leader": choice.leader, "candidate": choice.candidate})
        else:
            text = self._post(choice.candidate, "/failover", {"candidate": choice.candidate})
        answered = time.monotonic() - started
        # "Successfully switched over to "X"", or "Switched over to "Z" instead of "X"".
        if not text.startswith("Successfully") or f'"{choice.candidate}"' not in text:
            raise ShipyardError(f"environment {self.env}", f"Patroni answered: {text.strip()[-300:]}",
                                f"look at make status ENV={self.env}")
        try:
            writable = _wait(f"{choice.candidate} out of recovery", lambda: self.writable(choice.candidate), timeout_s)
        except TimeoutError:
            raise ShipyardError(f"environment {self.env}, node {choice.candidate}",
                                f"Patroni made it the leader but it is still in recovery after {timeout_s}s",
                                f"look at its log: make logs ENV={self.env} SERVICE={choice.candidate}") from None
        streaming = None
        if choice.action == "switchover":
            streaming = self.wait_streaming(choice.candidate, choice.leader, timeout_s) + writable
        return Switched(choice.action, choice.leader, choice.candidate, answered, writable + answered,
                        None if streaming is None else streaming + answered)

    def wait_streaming(self, leader: str, node: str, timeout_s: float) -> float:
        """Seconds until ``node`` streams from ``leader`` and Patroni's own view (the member keys in
        etcd, renewed every loop_wait) says it runs: the next command then decides on what is."""
        def settled() -> bool:
            if not self.streams(leader, node):
                return False
            member = decide.members(self.view()).get(node, {})
            return member.get("state") in decide.RUNNING_STATES and member.get("role") not in decide.LEADER_ROLES

        try:
            return _wait(f"{node} streaming from {leader}", settled, timeout_s, 0.2)
        except TimeoutError:
            raise ShipyardError(f"environment {self.env}, node {node}",
                                f"does not stream from the leader {leader} {timeout_s}s later",
                                f"look at its log (make logs ENV={self.env} SERVICE={node}); rebuild it: "
                                f"make pg-rebuild ENV={self.env} NODE={node}") from None

    def _wait_restarted(self, node: str, before: str | None, timeout_s: float) -> None:
        try:
            _wait(f"{node} restarted", lambda: (now := self.started_at(node)) is not None and now != before,
                  timeout_s, 0.2)
        except TimeoutError:
            raise ShipyardError(f"environment {self.env}, node {node}",
                                f"PostgreSQL was not started again within {timeout_s}s",
                                f"look at its log: make logs ENV={self.env} SERVICE={node}") from None

    def _wait_replayed(self, node: str, lsn: str, timeout_s: float) -> None:
        try:
            _wait(f"{node} replayed the WAL to {lsn}", lambda: self.replayed(node, lsn), timeout_s, 0.2)
        except TimeoutError:
            raise ShipyardError(f"environment {self.env}, node {node}",
                                f"has not replayed the restarted leader's WAL (to {lsn}) {timeout_s}s later",
                                f"look at its log (make logs ENV={self.env} SERVICE={node}); rebuild it: "
                                f"make pg-rebuild ENV={self.env} NODE={node}") from None

    def reinitialize(self, node: str, timeout_s: float = 300) -> float:
        """`make pg-rebuild`: Patroni wipes ``node`` and clones it from the leader; seconds until
        it streams again."""
        leader = decide.check_reinit(self.env, self.view(), node)
        before = self.started_at(node)
        started = time.monotonic()
        self._post(node, "/reinitialize", {})
        self._wait_restarted(node, before, timeout_s)
        self.wait_streaming(leader, node, timeout_s)
        return time.monotonic() - started

    def restart(self, node: str, timeout_s: float = 120) -> None:
        """PostgreSQL on ``node`` restarted by its Patroni; back as the replica it was (streaming)
        or as the leader (writable)."""
        view = self.view()
        was_leader = decide.leader_of(view) == node
        before = self.started_at(node)
        self._post(node, "/restart", {})
        self._wait_restarted(node, before, timeout_s)
        if was_leader:
            _wait(f"{node} writable", lambda: self.writable(node), timeout_s)
        else:
            leader = decide.leader_of(self.view())
            if leader:
                self.wait_streaming(leader, node, timeout_s)

    def pending(self) -> set[str]:
        """The members Patroni says need a restart (a postmaster parameter changed), each asked
        itself: /cluster shows it only once the member's key in etcd is renewed (next loop), and a
        reconcile that read it first restarted nothing after a lowered max_connections."""
        pending = set()
        for node in self.nodes:
            status, doc = self.get(node, "/patroni")
            if status == 200 and doc.get("pending_restart"):
                pending.add(node)
        return pending

    def _pending_in_view(self) -> bool:
        """Whether the cluster's view (``GET /cluster``, from etcd) shows any member pending a
        restart; True when no node answers it (the members are asked then)."""
        try:
            return any(m.get("pending_restart") for m in self.view()["members"])
        except ShipyardError:
            return True

    def restart_pending(self, lowered: set[str] = frozenset(), timeout_s: float = 120) -> list[str]:
        """Every member with a pending restart restarted, one at a time (decide.restart_plan):
        lines saying what was done."""
        view = self.view()
        leader = decide.leader_of(view)
        steps = decide.restart_plan(view, self.pending(), set(lowered), self.max_lag_bytes)
        done = []
        after_leader = None  # the leader's WAL position once it restarted in place
        for step in steps:
            if after_leader and step.action == "restart":
                # A replica starts with the standby minimums (max_connections & co.) its control
                # file holds, which it takes from the WAL record its restarted primary writes:
                # restarted before replaying that, it stays on the old value, still pending (CI saw it).
                self._wait_replayed(step.node, after_leader, timeout_s)
            if step.action == "switchover":
                # Chosen again now: the replicas just restarted, one of them is the sync standby.
                switched = self.switch_over(timeout_s=timeout_s)
                done.append(f"switchover {switched.old} -> {switched.new} (writes after {switched.writable_s:.1f}s)")
            else:
                started = time.monotonic()
                self.restart(step.node, timeout_s)
                done.append(f"{step.node} restarted ({time.monotonic() - started:.1f}s)")
                if step.node == leader and lowered:
                    after_leader = self.wal_position(leader)
        left = self.pending()
        if left:
            raise ShipyardError(f"environment {self.env}", f"still pending a restart after {', '.join(done) or 'nothing'}: "
                                f"{', '.join(sorted(left))}",
                                f"run make pg-restart ENV={self.env} again; a lowered max_connections & co. reaches "
                                f"a replica only after its primary restarted with it")
        return done

    def reconcile(self, desired: dict, timeout_s: float = 120) -> list[str]:
        """The deploy's step: the cluster's dynamic configuration made what the settings say
        (PATCH /config of the difference), then the restarts it needs. Lines to print."""
        observed = self.config()
        # How each parameter applies (pg_settings' context, one more exec) matters only for one
        # that differs: a no-op does not ask.
        changes = decide.config_changes(desired, observed, None)
        if changes:
            changes = decide.config_changes(desired, observed, self.contexts())
        if not changes:
            # Left over from an earlier deploy, a pending restart is long in etcd: the cluster's
            # view (one request) says whether any member has one, each member is asked only then
            # (a node on another host is one more SSH connection away: a no-op's cost).
            if self._pending_in_view() and self.pending():
                # A deploy that stopped after its PATCH (or a restart that failed) left nodes on
                # the old value of a postmaster parameter: the configuration is right, the nodes
                # are not yet. Repaired here, reason first.
                return (["Patroni dynamic configuration as the settings want; nodes still pending a restart "
                         f"from an earlier change: {', '.join(sorted(self.pending()))}"]
                        + self.restart_pending(timeout_s=timeout_s))
            return ["Patroni dynamic configuration as the settings want: nothing to change"]
        lines = [f"Patroni dynamic configuration: {c.line()}" for c in changes]
        node = self.nodes[0]
        for candidate in self.nodes:  # any member's API writes it to etcd
            if self.get(candidate, "/patroni")[0] == 200:
                node = candidate
                break
        status, text = self.transport.api(node, "PATCH", "/config", decide.config_patch(changes))
        if status != 200:
            raise ShipyardError(f"environment {self.env}, node {node}",
                                f"Patroni refused PATCH /config: {status or 'no answer'} {text.strip()[-300:]}",
                                f"look at its log (make logs ENV={self.env} SERVICE={node}) and retry the deploy")
        wanted = [c for c in changes if c.parameter]
        if wanted:
            # Each Patroni applies the new configuration in its next loop (reload; for a postmaster
            # parameter it then reports pending_restart): wait for that on every member.
            self._wait_applied(wanted, timeout_s)
        if any(c.applies != "live" for c in changes) and self.pending():
            try:
                lines += self.restart_pending(decide.lowered_minimums(changes), timeout_s)
            except ShipyardError as failed:
                raise self._put_back(node, changes, failed, timeout_s) from None
        return lines

    def _put_back(self, node: str, changes: list[decide.ConfigChange], failed: ShipyardError,
                  timeout_s: float) -> ShipyardError:
        """A node did not come back with the new configuration (a value PostgreSQL cannot start
        with: 60 GB of shared_buffers): the cluster's previous dynamic configuration is PATCHed
        back, and the node that failed starts again with it (Patroni retries its start every
        loop, with what the configuration says then). The error to raise says both."""
        back = [decide.ConfigChange(c.key, c.want, c.have, c.applies) for c in changes]
        status, text = self.transport.api(node, "PATCH", "/config", decide.config_patch(back))
        restored = status == 200
        def runs_as_before(member: str) -> bool:  # one read of the node's own view
            doc = self.get(member, "/patroni")[1]
            return doc.get("state") == "running" and not doc.get("pending_restart")

        if restored:
            try:
                _wait("every node running with the previous configuration",
                      lambda: all(runs_as_before(n) for n in self.nodes), timeout_s, 0.5)
            except TimeoutError:
                restored = False
        keys = ", ".join(c.key for c in changes)
        what = (f"{failed.where}: {failed.what}; the new dynamic configuration ({keys}) was put back to what ran "
                + ("before, and every node runs again" if restored else
                   f"before, but not every node is running again (PATCH {status or 'no answer'})"))
        return ShipyardError(f"environment {self.env}", what,
                             f"fix the setting (the node's log says why PostgreSQL did not start: make logs "
                             f"ENV={self.env} SERVICE=<node>) and deploy again")

    def _wait_applied(self, changes: list[decide.ConfigChange], timeout_s: float) -> None:
        restart = {c.parameter for c in changes if c.applies != "live"}
        wanted = [c for c in changes if c.want is not None]

        def applied(node: str) -> bool:
            status, doc = self.get(node, "/patroni")
            if status != 200:
                return True  # not running: it reads the configuration when it starts
            for change in wanted:
                rows = self.transport.sql(node, f"SELECT setting, unit FROM pg_settings WHERE name = '{_name(change.parameter)}'")
                if rows and _setting_is(rows[0], change.want):
                    continue
                if change.parameter in restart and doc.get("pending_restart"):
                    continue  # running with the old value until restarted: Patroni says so
                if rows and rows[0][0] == "(disabled)" and doc.get("pending_restart"):
                    continue  # archive_command reads so until archive_mode's restart switches it on
                return False
            return True

        try:
            _wait("every node applied the configuration", lambda: all(applied(n) for n in self.nodes), timeout_s, 0.5)
        except TimeoutError:
            raise ShipyardError(f"environment {self.env}", f"the nodes did not apply the new dynamic configuration "
                                f"within {timeout_s}s", f"look at the nodes' logs (make logs ENV={self.env} "
                                f"SERVICE=postgres)") from None


_UNITS = {"B": 1, "kB": 1024, "8kB": 8192, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4,
          "ms": 1, "s": 1000, "min": 60000, "h": 3600000, "d": 86400000}


def _setting_is(row: list[str], want: Any) -> bool:
    """pg_settings' (setting, unit) equals ``want`` as written in the config (128MB, 1s, on, 100)."""
    setting, unit = row[0], (row[1] if len(row) > 1 else "") or ""
    text = str(want).strip()
    if text == setting:
        return True
    if unit in _UNITS:
        for suffix in sorted(_UNITS, key=len, reverse=True):
            if text.endswith(suffix) and text[:-len(suffix)].strip().lstrip("-").isdigit():
                try:
                    return int(text[:-len(suffix)]) * _UNITS[suffix] == int(setting) * _UNITS[unit]
                except ValueError:
                    return False
    return text.lower() in ("on", "true") and setting == "on" or text.lower() in ("off", "false") and setting == "off"
