"""Rollout steps, checked on the committed environments."""

from __future__ import annotations

import dataclasses

import pytest

from shipyard import rollout_order, topology
from shipyard.inventory import load_environment
from shipyard.render import render_environment


# ci runs the vault backend, whose API and workers start a step after Vault's live setup
# (tests/unit/test_vault.py); with the files, one host converges in one step.
AGE_BACKEND = {"SHIPYARD_SECRETS__BACKEND": "age"}


def test_one_host_converges_in_a_step_per_live_setup_waited_for_so_independent_work_overlaps(repo):
    settings = load_environment(repo, "ci", AGE_BACKEND)
    topo = topology.build(settings)
    steps = rollout_order.rollout_steps(topo)
    # etcd's live setup (Patroni's access) must precede the PostgreSQL nodes: one step before it,
    # with everything that does not wait for PostgreSQL; the nodes and what needs them after it.
    assert len(steps) == 2
    assert set(steps[0]["ci"]) | set(steps[1]["ci"]) == {i.name for i in topo.instances}
    assert {"etcd-1", "redis", "consul-1", "elasticsearch-1"} <= set(steps[0]["ci"])
    assert {"postgres", "postgres-replica-1", "db-setup", "migrate", "api-blue"} <= set(steps[1]["ci"])
    points = {i: [c.name for c in comps] for i, comps in rollout_order.setup_points(topo, steps).items()}
    assert points == {0: ["etcd"], 1: ["postgres", "vault"]}


def test_several_hosts_converge_tier_by_tier_and_migrate_once(repo):
    settings = load_environment(repo, "production", {})
    steps = rollout_order.rollout_steps(topology.build(settings))
    # data everywhere (the log store too: obs-1's Elasticsearch; etcd on the control hosts; Redis's
    # nodes and every Sentinel, those of other hosts beside the master: they wait only for its
    # start, and the master's node.sh waits for a majority of them); then, after etcd's live
    # setup, PostgreSQL's nodes, then the log store's index template; then Consul's and Vault's
    # servers, on their three hosts at once (each one's health gate waits for all three); then
    # the migration with its own host's app (compose orders those two); then the other app
    # hosts, once the schema is there; then the edge; then what watches it all (and each host's
    # own agents: the node exporter, cAdvisor, the log shipper; edge-1's join its edge step,
    # nothing being pending elsewhere before them); Kibana's setup job last, once Kibana is up.
    assert [sorted(step) for step in steps] == [["app-1", "app-2", "data-1", "obs-1"],
                                                ["data-1"], ["obs-1"],
                                                ["app-1", "app-2", "data-1"],
                                                ["app-1"], ["app-2"], ["edge-1"], ["app-1", "app-2", "data-1", "obs-1"],
                                                ["obs-1"]]
    assert steps[0]["obs-1"] == ("elasticsearch-1",) and steps[2]["obs-1"] == ("logs-setup",)
    assert (steps[0]["app-1"][0], steps[0]["app-2"][0]) == ("etcd-1", "etcd-2") and "etcd-3" in steps[0]["data-1"]
    assert {"redis", "redis-replica-1", "redis-sentinel-3"} <= set(steps[0]["data-1"])
    assert {"redis-sentinel-1", "redis-sentinel-exporter-1"} <= set(steps[0]["app-1"])
    assert {"postgres", "postgres-replica-1", "postgres-setup"} <= set(steps[1]["data-1"])
    assert steps[7]["obs-1"] == ("alertmanager", "prometheus", "grafana", "node-exporter", "cadvisor", "logship", "kibana")
    assert steps[8] == {"obs-1": ("kibana-setup",)}
    assert steps[3] == {"app-1": ("consul-1", "vault-1"), "app-2": ("consul-2", "vault-2"),
                        "data-1": ("consul-3", "vault-3")}
    # The servers' agent-token job runs against the whole cluster: after it, on the first host.
    assert steps[4]["app-1"] == ("consul-agent-token", "db-setup", "consul-setup", "migrate", "api-blue", "api-green",
                                 "worker-blue", "worker-green")
    assert set(steps[5]["app-2"]) == {"api-blue", "api-green", "worker-blue", "worker-green"}
    rendered = render_environment(settings)
    assert "migrate" in rendered["app-1"].compose["services"]
    assert "migrate" not in rendered["app-2"].compose["services"]  # two Alembic runs at once no more
    assert "migrate" not in rendered["app-2"].compose["services"]["api-blue"].get("depends_on", {})


def test_nodes_of_one_cluster_on_two_data_hosts_converge_together_and_what_watches_them_after_the_setup(repo):
    """multi: PostgreSQL's first node on h3, a replica on h2. Both nodes in one step (after
    etcd's live setup); the setup job on the first node's host after them; the replica's
    exporter, which waits for that job on another host, after it — not held back by the job's
    later place in the tier (a cycle before this was fixed)."""
    steps = rollout_order.rollout_steps(topology.build(load_environment(repo, "multi", {})))
    where = {name: (n, host) for n, step in enumerate(steps) for host, names in step.items() for name in names
             if name.startswith("postgres")}
    assert where["postgres"][0] == where["postgres-replica-1"][0]
    assert (where["postgres"][1], where["postgres-replica-1"][1]) == ("h3", "h2")
    assert where["postgres-setup"] == (where["postgres"][0] + 1, "h3")
    assert where["postgres-replica-exporter-1"][0] > where["postgres-setup"][0]


@pytest.fixture
def vault_before(request):
    """Vault's live setup as if the task platform's API and workers logged in to it at run time."""
    from shipyard.components import vault

    kept = vault.COMPONENT.live_setup
    wanted = dataclasses.replace(kept, before=lambda settings: tuple(("taskplatform", s) for s in request.param))
    object.__setattr__(vault.COMPONENT, "live_setup", wanted)  # frozen: the registry's own object
    yield vault.COMPONENT
    object.__setattr__(vault.COMPONENT, "live_setup", kept)


def test_with_no_service_waiting_a_live_setup_runs_after_the_last_step(repo):
    """Vault's and PostgreSQL's (Patroni's dynamic configuration): nothing waits for them. etcd's
    is waited for by the PostgreSQL nodes: right after etcd's members, before the nodes."""
    for env in ("ci", "production"):
        topo = topology.build(load_environment(repo, env, AGE_BACKEND))
        steps = rollout_order.rollout_steps(topo)
        points = {i: [c.name for c in comps] for i, comps in rollout_order.setup_points(topo, steps).items()}
        assert points == {0: ["etcd"], len(steps) - 1: ["postgres", "vault"]}


@pytest.mark.parametrize("vault_before", [("api", "worker")], indirect=True)
def test_services_waiting_for_a_live_setup_converge_a_step_later_on_one_host_too(repo, vault_before):
    topo = topology.build(load_environment(repo, "ci", AGE_BACKEND))
    steps = rollout_order.rollout_steps(topo)
    # (etcd and what needs no PostgreSQL first: etcd's setup precedes the PostgreSQL nodes.)
    # Vault's servers and db-setup (whose issuer role the setup needs) next, with everything
    # that does not wait; the setup; then the API and workers, and what depends on them.
    assert len(steps) == 3
    assert {"vault-1", "db-setup", "postgres", "migrate"} <= set(steps[1]["ci"])
    assert {"api-blue", "api-green", "worker-blue", "worker-green", "router"} <= set(steps[2]["ci"])
    assert not {"api-blue", "worker-blue", "router"} & (set(steps[0]["ci"]) | set(steps[1]["ci"]))
    points = rollout_order.setup_points(topo, steps)
    assert points[1] == (vault_before,) and [c.name for c in points[0]] == ["etcd"]


@pytest.mark.parametrize("vault_before", [("db-setup",)], indirect=True)
def test_a_service_a_live_setup_both_waits_for_and_precedes_is_refused(repo, vault_before):
    with pytest.raises(ValueError, match="db-setup"):
        rollout_order.rollout_steps(topology.build(load_environment(repo, "ci", AGE_BACKEND)))


def test_a_live_setup_that_fails_stops_the_rollout_saying_where_what_and_the_fix(capsys):
    from pyinfra.api.exceptions import OperationError

    from shipyard.apply.rollout import run_live_setup
    from shipyard.errors import ShipyardError

    def unreachable(ctx):
        raise ShipyardError("https://127.0.0.1:18200", "unreachable (ConnectionError)", "check that its server runs")

    with pytest.raises(OperationError) as raised:
        run_live_setup("vault", unreachable, None)
    assert str(raised.value) == ("vault's live setup stopped the rollout: https://127.0.0.1:18200: unreachable "
                                 "(ConnectionError)\n  fix: check that its server runs")
    run_live_setup("vault", lambda ctx: ["unsealed vault-1"], None)
    assert capsys.readouterr().out == "shipyard: vault: unsealed vault-1\n"


def test_live_setups_of_one_point_run_at_once_and_report_every_failure(capsys):
    """Two setups at one point: both run (the second does not wait for the first to end), their
    lines printed in component order; when both fail, both are reported."""
    import threading

    from pyinfra.api.exceptions import OperationError

    from shipyard.apply.rollout import run_live_setups
    from shipyard.errors import ShipyardError

    both = threading.Barrier(2, timeout=10)  # each waits for the other to have started

    def first(ctx):
        both.wait()
        return ["one"]

    def second(ctx):
        both.wait()
        return ["two"]

    run_live_setups([("postgres", first), ("vault", second)], None)
    assert capsys.readouterr().out == "shipyard: postgres: one\nshipyard: vault: two\n"

    def broken(where):
        def run(ctx):
            raise ShipyardError(where, "refused", "look at it")
        return run

    with pytest.raises(OperationError) as raised:
        run_live_setups([("postgres", broken("node postgres")), ("vault", broken("vault-1"))], None)
    assert "postgres's live setup stopped the rollout: node postgres" in str(raised.value)
    assert "vault's live setup stopped the rollout: vault-1" in str(raised.value)


def test_what_the_setups_make_ready_runs_in_the_background_and_a_failure_is_left_to_the_setup(repo):
    """load_ahead returns at once (the caller goes on to its round trip) and runs each setup's
    ``ahead`` in order; one that fails does not stop the next (its setup meets it and says why)."""
    import threading

    from shipyard.apply.rollout import load_ahead, setups_ahead

    go, done, ran = threading.Event(), threading.Event(), []

    def first():
        go.wait(10)
        raise RuntimeError("no tunnel")

    load_ahead([first, lambda: ran.append("second"), done.set])
    assert ran == []  # not waited for
    go.set()
    assert done.wait(10) and ran == ["second"]
    # Every live setup in `multi` brings one (its clients imported, PostgreSQL's engine tunnels).
    settings = load_environment(repo, "multi", {})
    assert [call.func.__name__ for call in setups_ahead(settings)] == ["_ahead", "reconcile_ahead", "ahead"]


def test_a_setups_refusal_reaches_pyinfra_without_the_clients_exception_chain():
    """pyinfra prints the traceback of what a python.call raises: the refusal's own text (where,
    what, fix), not the chain of the client errors under it."""
    from pyinfra.api.exceptions import OperationError

    from shipyard.apply.rollout import run_live_setup
    from shipyard.errors import ShipyardError

    def refused(ctx):
        try:
            raise ConnectionError("low-level detail")
        except ConnectionError as err:
            raise ShipyardError("vault-1", "refused the deployer's credential", "make a new one") from err

    with pytest.raises(OperationError) as raised:
        run_live_setup("vault", refused, None)
    assert "vault-1: refused the deployer's credential" in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
