"""Rollout steps, checked on the committed environments."""

from __future__ import annotations

from shipyard import rollout_order, topology
from shipyard.inventory import load_environment
from shipyard.render import render_environment


def test_one_host_converges_in_one_step_so_independent_work_overlaps(repo):
    settings = load_environment(repo, "ci", {})
    steps = rollout_order.rollout_steps(topology.build(settings))
    assert len(steps) == 1
    assert set(steps[0]["ci"]) == {i.name for i in topology.build(settings).instances}


def test_several_hosts_converge_tier_by_tier_and_migrate_once(repo):
    settings = load_environment(repo, "production", {})
    steps = rollout_order.rollout_steps(topology.build(settings))
    # data everywhere; then Consul's and Vault's servers, on their three hosts at once (each one's health
    # gate waits for all three); then the migration with its own host's app (compose orders
    # those two); then the other app hosts, once the schema is there; then the edge; then what
    # watches it all (and each host's own agents: the node exporter, cAdvisor; edge-1's join its
    # edge step, nothing being pending elsewhere before them).
    assert [sorted(step) for step in steps] == [["data-1"], ["app-1", "app-2", "data-1"], ["app-1"], ["app-2"],
                                                ["edge-1"], ["app-1", "app-2", "data-1", "obs-1"]]
    assert steps[5]["obs-1"] == ("alertmanager", "prometheus", "grafana", "node-exporter", "cadvisor")
    assert steps[1] == {"app-1": ("consul-1", "vault-1"), "app-2": ("consul-2", "vault-2"),
                        "data-1": ("consul-3", "vault-3")}
    # The servers' agent-token job runs against the whole cluster: after it, on the first host.
    assert steps[2]["app-1"] == ("consul-agent-token", "db-setup", "consul-setup", "migrate", "api-blue", "api-green",
                                 "worker-blue", "worker-green")
    assert set(steps[3]["app-2"]) == {"api-blue", "api-green", "worker-blue", "worker-green"}
    rendered = render_environment(settings)
    assert "migrate" in rendered["app-1"].compose["services"]
    assert "migrate" not in rendered["app-2"].compose["services"]  # two Alembic runs at once no more
    assert "migrate" not in rendered["app-2"].compose["services"]["api-blue"].get("depends_on", {})
