"""Instances, addresses and rollout order, checked on the rendered files of every committed
environment — not against the functions that wrote them."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from shipyard import topology
from shipyard.inventory import load_environment
from shipyard.render import render_environment, render_host

ENVIRONMENTS = ("local", "ci", "production")
IP_PORT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})[: ](\d{2,5})\b")


def handed_out(rendered) -> set[tuple[str, int]]:
    """Every ip:port the render gives a host's services: environment, command lines, config files."""
    texts = []
    for service in rendered.compose["services"].values():
        texts += [str(v) for v in service.get("environment", {}).values()]
        # A listen address is the service's own socket, not one handed to it (etcd's --listen-*-urls).
        texts.append(" ".join(a for a in service.get("command", []) if not a.startswith("--listen-")))
    texts += [content.decode() for path, content in rendered.files.items() if path != "compose.yaml"]
    return {(ip, int(port)) for text in texts for ip, port in IP_PORT.findall(text)}


def published(rendered) -> dict[tuple[str, int], str]:
    """(bind address, host port) → service, from the rendered compose file."""
    out = {}
    for name, service in rendered.compose["services"].items():
        for binding in service.get("ports", []):
            ip, port, _ = binding.rsplit(":", 2)
            out[(ip, int(port))] = name
    return out


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_address_given_to_any_host_is_published_there_by_its_provider(repo, env):
    settings = load_environment(repo, env, {})
    rendered = render_environment(settings)
    by_address = {h.address: h.name for h in settings.hosts}
    # Destinations a setting names outright (Alertmanager's webhook receivers) are not addresses
    # between the environment's hosts.
    named = {(u.hostname, u.port) for u in map(urlsplit, settings.alertmanager.webhook_urls)}
    for host_name, host in rendered.items():
        for ip, port in handed_out(host) - named:
            assert ip not in ("127.0.0.1", "0.0.0.0"), f"{env}/{host_name} is given {ip}:{port}"
            assert ip in by_address, f"{env}/{host_name} is given {ip}:{port}, no host has that address"
            provider = rendered[by_address[ip]]
            assert (ip, port) in published(provider), \
                f"{env}/{host_name} is given {ip}:{port}, which {by_address[ip]} does not publish there"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_nothing_binds_every_address_but_a_public_port(repo, env):
    settings = load_environment(repo, env, {})
    for host_name, host in render_environment(settings).items():
        for (ip, port), service in published(host).items():
            if ip == "0.0.0.0":
                inst = topology.build(settings).find(service, settings.host(host_name))
                assert inst.service.port.publish == "public", f"{env}/{host_name}: {service} on 0.0.0.0:{port}"
            else:
                assert ip in ("127.0.0.1", settings.host(host_name).address), (env, host_name, service, ip)
        if len(settings.hosts) == 1:
            assert all(ip == "127.0.0.1" for ip, _ in published(host)), f"{env}: one host publishes only on loopback"


def test_production_hands_the_app_every_data_instance_it_needs_on_the_private_address(repo):
    settings = load_environment(repo, "production", {})
    rendered = render_environment(settings)
    api = rendered["app-1"].compose["services"]["api-blue"]["environment"]
    assert api["TASKS_PG_HOSTS"] == "10.0.2.21:5432,10.0.2.21:5433"
    # A Sentinel on each control host: app-1's own by name, the others at their hosts' addresses.
    assert api["TASKS_REDIS_SENTINELS"] == "redis-sentinel-1:26379,10.0.1.12:26380,10.0.2.21:26381"
    data = published(rendered["data-1"])
    # The replica and the Sentinel too (the review found them on 127.0.0.1), and every Redis node
    # (after a failover Sentinel hands the app a former replica as the master).
    for port in (5432, 5433, 6379, 6380, 26381):
        assert ("10.0.2.21", port) in data, port
    assert ("10.0.1.11", 26379) in published(rendered["app-1"])  # the other hosts' Sentinels reach it
    assert ("10.0.1.11", 8000) in published(rendered["app-1"])  # the edge host reaches the API there
    assert handed_out(rendered["app-1"]) and handed_out(rendered["edge-1"])  # the invariant test is not vacuous


def test_numbered_instances_and_their_ports(repo):
    settings = load_environment(repo, "production", {"SHIPYARD_POSTGRES__REPLICAS": "2"})
    data = settings.host("data-1")
    assert topology.build(settings).published(data, "postgres-replica-2") == ("10.0.2.21", 5434)
    assert topology.build(settings).published(data, "redis-sentinel-3") == ("10.0.2.21", 26381)
    assert topology.build(settings).published(data, "postgres-setup") is None
    ci = load_environment(repo, "ci", {})
    assert topology.build(ci).published(ci.hosts[0], "postgres-replica-1") is None  # nobody elsewhere needs it
    assert topology.build(ci).published(ci.hosts[0], "postgres") == ("127.0.0.1", 15432)


def test_production_spreads_consul_one_server_per_control_host_meeting_on_private_addresses(repo):
    settings = load_environment(repo, "production", {})
    rendered = render_environment(settings)
    servers = {inst.name: inst.host for inst in topology.build(settings).instances_of("consul", "consul")}
    assert len({h.name for h in servers.values()}) == 3  # one per host: losing a host loses one vote
    for name, host in servers.items():
        service = rendered[host.name].compose["services"][name]
        assert f"-advertise={host.address}" in service["command"]
        # Raft and gossip on the host's private address only, at their own numbers (advertised as is).
        assert {f"{host.address}:8300:8300", f"{host.address}:8301:8301",
                f"{host.address}:8301:8301/udp"} <= set(service["ports"])
        hcl = rendered[host.name].files["consul/server.hcl"].decode()
        joined = re.search(r"retry_join\s*=\s*\[(.*)\]", hcl).group(1)
        assert sorted(joined.replace('"', "").split(", ")) == sorted(f"{h.address}:8301" for h in servers.values())
    # A client of Consul reaches its own host's server by name, the others at their hosts' addresses.
    api = rendered["app-2"].compose["services"]["api-blue"]["environment"]["TASKS_CONSUL_ADDRS"].split(",")
    assert "consul-2:8500" in api and "10.0.1.11:8500" in api and "10.0.2.21:8502" in api


@pytest.mark.parametrize("env", ["local", "ci"])
def test_servers_on_one_host_meet_on_its_network_and_publish_no_peer_port(repo, env):
    settings = load_environment(repo, env, {})
    host = render_environment(settings)[settings.hosts[0].name]
    for inst in topology.build(settings).instances_of("consul", "consul"):
        service = host.compose["services"][inst.name]
        assert not any(a.startswith("-advertise") for a in service["command"])
        assert all(p.endswith(":8500") for p in service["ports"]), service["ports"]
    assert 'retry_join       = ["consul-1:8301"' in host.files["consul/server.hcl"].decode()


def test_more_peers_than_hosts_is_refused_with_the_placement_fix(repo):
    from shipyard.errors import SettingsError

    with pytest.raises(SettingsError) as refused:
        load_environment(repo, "production", {"SHIPYARD_CONSUL__SERVERS": "5"})
    text = str(refused.value)
    assert ("host app-1: consul-1 and consul-4 would both publish the peer ports 8300/tcp, 8301/tcp, 8301/udp "
            "on 10.0.1.11") in text
    assert "list at least 5 hosts in group 'control'" in text


def test_the_topology_is_built_once_per_settings_and_indexed(repo, monkeypatch):
    settings = load_environment(repo, "production", {})
    built = []
    real = topology._placed
    monkeypatch.setattr(topology, "_placed", lambda s: built.append(s) or real(s))
    topology._BUILT.clear()
    first = topology.build(settings)
    for host in settings.hosts:  # render, plan and status ask again and again: no new placement
        render_host(settings, host)
    assert topology.build(settings) is first and len(built) == 1
    # A different settings object (an override) is a different topology.
    other = load_environment(repo, "production", {"SHIPYARD_CONSUL__SERVERS": "1"})
    assert topology.build(other) is not first and len(built) == 2
    # The indexes answer what the scans answered.
    for host in settings.hosts:
        assert first.instances_on(host) == tuple(i for i in first.instances if i.host.name == host.name)
    assert first.instances_of("consul", "consul") == tuple(
        i for i in first.instances if i.component.name == "consul" and i.service.name == "consul")
    assert first.find("consul-2").host.name == first.instances_of("consul", "consul")[1].host.name


def test_redis_spreads_its_nodes_over_the_cache_hosts_and_a_sentinel_over_each_control_host(repo):
    """Losing any one host leaves a Redis node and a majority of the Sentinels (issue 25: the
    master's host stopped fails over across hosts): the replicas start on the host after the
    master's, the Sentinels one per control host; each host's exporters beside what they watch."""
    settings = load_environment(repo, "multi", {})
    topo = topology.build(settings)
    where = {i.name: i.host.name for i in topo.instances_of("redis")}
    assert (where["redis"], where["redis-replica-1"]) == ("h2", "h3")  # `cache = [h3, h2]`, taken in host order
    assert [where[f"redis-sentinel-{n}"] for n in (1, 2, 3)] == ["h1", "h2", "h3"]
    for name, host in where.items():
        if "-exporter" in name:
            assert host == where[name.replace("-exporter", "")], name
    # Each Sentinel and node announces its host's address: what the others and the app reach.
    assert str(topo.announced(topo.find("redis-replica-1"))) == "10.231.250.13:6380"
    assert str(topo.announced(topo.find("redis-sentinel-1"))) == "10.231.250.11:26379"
    # An inventory naming no cache group runs Redis on its data hosts.
    production = load_environment(repo, "production", {})
    assert {i.host.name for i in topology.build(production).instances_of("redis", "redis")} == {"data-1"}
    assert {i.host.name for i in topology.build(production).instances_of("redis", "redis-sentinel")} == \
        {"data-1", "app-1", "app-2"}
