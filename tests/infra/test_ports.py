"""Ports are published exactly where the topology says, and data ports never beyond loopback
(single host) or the host's private address (several hosts)."""

from shipyard.topology import LOOPBACK, publish_binding


def published(container) -> set[tuple[str, int]]:
    ports = container["HostConfig"]["PortBindings"] or {}
    return {(b["HostIp"] or "0.0.0.0", int(b["HostPort"])) for bindings in ports.values() for b in bindings or []}


def test_published_ports_match_topology(target, service):
    expected = publish_binding(target.settings, target.rendered.host, service)
    assert published(target.container_of(service)) == ({expected} if expected else set())


def test_data_ports_listen_only_where_they_should(target, service):
    if service not in ("postgres", "redis"):
        return
    bind, port = publish_binding(target.settings, target.rendered.host, service)
    if len(target.settings.hosts) == 1:
        assert bind == LOOPBACK
    assert target.host.socket(f"tcp://{bind}:{port}").is_listening
    assert not target.host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not target.host.socket(f"tcp://:::{port}").is_listening
