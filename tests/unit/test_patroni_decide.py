"""What `make pg-promote`, `make pg-rebuild`, the deploy's reconcile and `make plan` ask Patroni
for, decided from documents as its REST API returns them (shipyard/components/postgres/
patroni_decide.py, pure). The calls themselves run against real nodes in tests/patroni/."""

from __future__ import annotations

import pytest
import yaml

from shipyard.components.postgres import patroni_decide as decide
from shipyard.errors import ShipyardError
from shipyard.inventory import load_environment
from shipyard.render import render_host

MB = 1024 * 1024


def _cluster(*members):
    return {"members": [dict(zip(("name", "role", "state", "lag"), m)) for m in members]}


SYNC = _cluster(("postgres", "leader", "running", None), ("postgres-replica-1", "sync_standby", "running", 0),
                ("postgres-replica-2", "replica", "running", 0))
ASYNC = _cluster(("postgres", "leader", "running", None), ("postgres-replica-1", "replica", "running", 4096),
                 ("postgres-replica-2", "replica", "running", 16))


def _choose(cluster, to=None, answers=True, force=False):
    return decide.choose_switchover("ci", cluster, to, answers, force, MB)


def test_a_node_still_joining_is_never_the_candidate_and_naming_it_says_which_may_lead():
    cluster = _cluster(("postgres", "leader", "running", None), ("postgres-replica-1", "replica", "running", 0),
                       ("postgres-replica-2", "replica", "running", 16))
    cluster["members"][1]["tags"] = {"nofailover": True}  # as Patroni reports a node still joining
    assert _choose(cluster).candidate == "postgres-replica-2"  # the least lag is passed over
    with pytest.raises(ShipyardError) as refused:
        _choose(cluster, "postgres-replica-1")
    text = str(refused.value)
    assert "node postgres-replica-1" in text and "tagged nofailover (still joining" in text
    assert "name a node that may lead (postgres-replica-2)" in text and "pg-rebuild" not in text


def test_the_default_candidate_is_the_sync_standby_else_the_least_lag():
    assert _choose(SYNC) == decide.Switch("switchover", "postgres", "postgres-replica-1")
    assert _choose(ASYNC) == decide.Switch("switchover", "postgres", "postgres-replica-2")
    assert _choose(ASYNC, "postgres-replica-1").candidate == "postgres-replica-1"


BEHIND = _cluster(("postgres", "leader", "running", None), ("postgres-replica-1", "replica", "streaming", 16 * MB),
                  ("postgres-replica-2", "replica", "stopped", None))


def test_a_switchover_waits_only_when_lag_alone_holds_it_back():
    assert decide.held_back_by_lag(BEHIND, None, MB) and decide.held_back_by_lag(BEHIND, "postgres-replica-1", MB)
    # A stopped replica does not catch up by waiting; a healthy candidate needs no wait.
    assert not decide.held_back_by_lag(BEHIND, "postgres-replica-2", MB)
    assert not decide.held_back_by_lag(ASYNC, None, MB) and not decide.held_back_by_lag(SYNC, "postgres-replica-1", MB)
    caught_up = _cluster(("postgres", "leader", "running", None), ("postgres-replica-1", "replica", "streaming", 0),
                         ("postgres-replica-2", "replica", "stopped", None))
    assert not decide.held_back_by_lag(caught_up, None, MB)


@pytest.mark.parametrize("cluster,to,answers,force,message", [
    (SYNC, "postgres", True, False, "postgres is already the leader|node postgres: is already the leader"),
    (SYNC, "postgres-replica-9", True, False, "postgres-replica-9 is not a member.*members: postgres, postgres-replica-1"),
    (SYNC, "postgres-replica-2", True, False, "is not the synchronous standby \\(postgres-replica-1\\).*TO=postgres-replica-1"),
    (_cluster(("postgres", "leader", "running", None), ("postgres-replica-1", "replica", "stopped", None)),
     None, True, False, "no healthy replica to hand over to \\(postgres-replica-1: its state is stopped\\)"),
    (_cluster(("postgres", "leader", "running", None), ("postgres-replica-1", "replica", "running", 5 * MB)),
     "postgres-replica-1", True, False, "cannot take over: it is 5242880 bytes behind"),
    (_cluster(("postgres", "leader", "running", None)), None, True, False, "no healthy replica.*no other member"),
    (SYNC, None, False, False, "REST API does not answer.*FORCE=1"),
    (_cluster(("postgres-replica-1", "replica", "running", 0)), None, True, False, "has no leader.*FORCE=1"),
])
def test_refusals_say_what_and_the_fix(cluster, to, answers, force, message):
    with pytest.raises(ShipyardError, match=f"(?s){message}"):
        _choose(cluster, to, answers, force)


def test_a_dead_leader_with_force_is_a_failover_to_the_candidate():
    assert _choose(SYNC, "postgres-replica-1", answers=False, force=True) == decide.Switch(
        "failover", "postgres", "postgres-replica-1")
    # A dead leader's sync standby is the one that holds every acknowledged commit: the default.
    assert _choose(SYNC, answers=False, force=True).candidate == "postgres-replica-1"


def test_a_reinit_is_refused_for_the_leader_a_stranger_and_without_a_leader():
    assert decide.check_reinit("ci", SYNC, "postgres-replica-2") == "postgres"
    with pytest.raises(ShipyardError, match="is the leader: rebuilding it would wipe"):
        decide.check_reinit("ci", SYNC, "postgres")
    with pytest.raises(ShipyardError, match="postgres-replica-9 is not a member"):
        decide.check_reinit("ci", SYNC, "postgres-replica-9")
    with pytest.raises(ShipyardError, match="no leader to clone from"):
        decide.check_reinit("ci", _cluster(("postgres-replica-1", "replica", "running", 0)), "postgres-replica-1")


CONTEXTS = {"max_connections": "postmaster", "shared_buffers": "postmaster", "work_mem": "user",
            "max_slot_wal_keep_size": "sighup"}
OBSERVED = {"ttl": 10, "loop_wait": 2, "retry_timeout": 4, "pause": True,
            "postgresql": {"use_pg_rewind": True, "parameters": {"max_connections": 100, "shared_buffers": "128MB",
                                                                "max_slot_wal_keep_size": "1024MB", "work_mem": "4MB"}}}


def test_config_changes_say_live_or_restart_and_leave_the_operators_keys_alone():
    desired = {"ttl": 12, "loop_wait": 2, "retry_timeout": 4,
               "postgresql": {"use_pg_rewind": True, "parameters": {"max_connections": "120", "shared_buffers": "128MB",
                                                                   "max_slot_wal_keep_size": "2048MB"}}}
    changes = decide.config_changes(desired, OBSERVED, CONTEXTS)
    assert [(c.key, c.have, c.want, c.applies) for c in changes] == [
        ("postgresql.parameters.max_connections", 100, "120", "restart"),
        ("postgresql.parameters.max_slot_wal_keep_size", "1024MB", "2048MB", "live"),
        ("postgresql.parameters.work_mem", "4MB", None, "live"),  # the settings no longer name it: removed
        ("ttl", 10, 12, "live")]
    # "pause" (patronictl pause) is not the settings': never patched.
    assert decide.config_patch(changes) == {"ttl": 12, "postgresql": {"parameters": {
        "max_connections": "120", "max_slot_wal_keep_size": "2048MB", "work_mem": None}}}
    lines = decide.plan_lines(changes)
    assert "max_connections: 100 -> 120: needs a restart" in lines[0] and "replicas first" in lines[0]
    assert lines[1].endswith("1024MB -> 2048MB: applies live (reload, no restart)")
    assert "work_mem: 4MB -> (removed)" in lines[2]
    # Unread contexts (no node answered): said, not guessed.
    assert {c.applies for c in decide.config_changes(desired, OBSERVED, None) if c.parameter} == {"unknown"}
    # The same values written differently (YAML int, JSON string) are no change.
    same = {"ttl": 10, "loop_wait": 2, "retry_timeout": 4, "postgresql": {"use_pg_rewind": True, "parameters": {
        "max_connections": "100", "shared_buffers": "128MB", "max_slot_wal_keep_size": "1024MB", "work_mem": "4MB"}}}
    assert decide.config_changes(same, OBSERVED, CONTEXTS) == []


def test_restarts_run_replicas_first_the_sync_standby_last_then_the_leader_by_switchover():
    everyone = {"postgres", "postgres-replica-1", "postgres-replica-2"}
    assert decide.restart_plan(SYNC, everyone, set(), MB) == [
        decide.RestartStep("restart", "postgres-replica-2"), decide.RestartStep("restart", "postgres-replica-1"),
        decide.RestartStep("switchover", "postgres-replica-1"), decide.RestartStep("restart", "postgres")]
    # A lowered max_connections: the leader in place first (a standby cannot run below its primary).
    assert decide.restart_plan(SYNC, everyone, {"max_connections"}, MB)[0] == decide.RestartStep("restart", "postgres")
    assert decide.restart_plan(SYNC, {"postgres-replica-2"}, set(), MB) == [decide.RestartStep("restart", "postgres-replica-2")]
    alone = _cluster(("postgres", "leader", "running", None))
    assert decide.restart_plan(alone, {"postgres"}, set(), MB) == [decide.RestartStep("restart", "postgres")]
    lowered = decide.config_changes({"postgresql": {"parameters": {"max_connections": 50}}},
                                    {"postgresql": {"parameters": {"max_connections": 100}}}, CONTEXTS)
    assert decide.lowered_minimums(lowered) == {"max_connections"}
    assert "the leader in place first" in decide.plan_lines(lowered)[0]


def test_the_desired_configuration_is_the_rendered_bootstrap_dcs(repo):
    from shipyard.components.postgres.commands import desired_config

    settings = load_environment(repo, "ci", {"SHIPYARD_POSTGRES__MAX_CONNECTIONS": "150"})
    rendered = yaml.safe_load(render_host(settings, settings.hosts_with_role("data")[0]).files["postgres/patroni.yml"])
    assert desired_config(settings) == rendered["bootstrap"]["dcs"]
    assert desired_config(settings)["postgresql"]["parameters"]["max_connections"] == 150


def _config_hashes(repo, variables):
    settings = load_environment(repo, "ci", variables)
    compose = render_host(settings, settings.hosts_with_role("data")[0]).compose
    return {name: doc["labels"].get("org.shipyard.config-hash") for name, doc in compose["services"].items()
            if name.startswith("postgres")}


def test_a_changed_parameter_recreates_no_node_the_reconcile_applies_it(repo):
    """Compose recreates a service whose config hash changed: that would restart every node at
    once for a value Patroni ignores after the first start (bootstrap.dcs). The node's other files
    still count (here pgbackrest.conf: a new retention recreates them)."""
    assert _config_hashes(repo, {}) == _config_hashes(repo, {"SHIPYARD_POSTGRES__MAX_CONNECTIONS": "150",
                                                             "SHIPYARD_POSTGRES__PATRONI__TTL_S": "12"})
    assert _config_hashes(repo, {}) != _config_hashes(repo, {"SHIPYARD_POSTGRES__BACKUP_KEEP": "5"})


def test_the_reconcile_runs_once_after_the_nodes(repo):
    from shipyard import rollout_order, topology

    topo = topology.build(load_environment(repo, "ci", {}))
    steps = rollout_order.rollout_steps(topo)
    points = rollout_order.setup_points(topo, steps)
    at = [i for i, comps in points.items() if any(c.name == "postgres" for c in comps)]
    assert len(at) == 1
    step_of = {name: i for i, step in enumerate(steps) for names in step.values() for name in names}
    assert all(step_of[n] <= at[0] for n in topo.instance_names("postgres", "postgres"))


def test_a_permanent_slot_the_settings_no_longer_name_is_removed_whole_and_failsafe_is_owned():
    # What a cluster bootstrapped before pgBackRest holds: the old backup service's slot.
    observed = {"ttl": 10, "failsafe_mode": False, "slots": {"postgres_backup": {"type": "physical"}, "kept": {"type": "physical"}},
                "postgresql": {"parameters": {"max_connections": 100}}}
    desired = {"ttl": 10, "failsafe_mode": True, "slots": {"kept": {"type": "physical"}},
               "postgresql": {"parameters": {"max_connections": 100}}}
    changes = decide.config_changes(desired, observed, {"max_connections": "postmaster"})
    assert [(c.key, c.want) for c in changes] == [("slots.postgres_backup", None), ("failsafe_mode", True)]
    assert decide.config_patch(changes) == {"slots": {"postgres_backup": None}, "failsafe_mode": True}
    no_slots = {k: v for k, v in desired.items() if k != "slots"}
    assert [c.key for c in decide.config_changes(no_slots, observed, {})] == ["slots.kept", "slots.postgres_backup",
                                                                             "failsafe_mode"]


def test_a_reconcile_with_nothing_to_change_asks_no_node_how_parameters_apply(repo):
    """The no-op's reconcile: GET /config and the cluster's view; pg_settings' contexts (one more
    exec into a node) only when something differs, which then says live or restart."""
    import json

    from shipyard.components.postgres.commands import desired_config
    from shipyard.components.postgres.patroni_api import Cluster

    desired = desired_config(load_environment(repo, "ci", {}))

    class Answers:
        def __init__(self, config):
            self.config, self.asked = config, []

        def api(self, node, method, path, body=None):
            self.asked.append(f"{method} {path}")
            if path == "/config":
                return 200, json.dumps(self.config)
            return (200, json.dumps(SYNC)) if path == "/cluster" else (200, "{}")

        def sql(self, node, query):
            self.asked.append("sql")
            return [["max_connections", "postmaster"], ["work_mem", "user"]]

    same = Answers(desired)
    lines = Cluster("ci", ("postgres",), same, MB).reconcile(desired)
    assert lines == ["Patroni dynamic configuration as the settings want: nothing to change"]
    assert same.asked == ["GET /config", "GET /cluster"]

    changed = json.loads(json.dumps(desired))
    changed["postgresql"]["parameters"]["max_connections"] = 99
    plan = Cluster("ci", ("postgres",), Answers(changed), MB)
    assert [c.applies for c in decide.config_changes(desired, changed, plan.contexts())] == ["restart"]
