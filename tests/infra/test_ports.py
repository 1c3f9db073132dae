"""Ports are published as rendered, and nothing listens beyond where a user expects: loopback
on a single host, the host's private address for what other hosts need, all addresses only
for a port declared public (the edge) whose bind setting says so."""

from shipyard.topology import LOOPBACK


def bindings(container) -> set[tuple[str, int, int]]:
    ports = container["HostConfig"]["PortBindings"] or {}
    return {(b["HostIp"] or "0.0.0.0", int(b["HostPort"]), int(key.split("/")[0]))
            for key, binds in ports.items() for b in binds or []}


def test_published_ports_are_the_rendered_ones(target, service):
    rendered = target.rendered.compose["services"][service].get("ports", [])
    want = {(ip, int(host_port), int(container_port))
            for ip, host_port, container_port in (p.rsplit(":", 2) for p in rendered)}
    assert bindings(target.container_of(service)) == want


def test_only_public_ports_listen_on_every_address(target, service):
    public = target.instance(service).service.port
    for ip, host_port, _ in bindings(target.container_of(service)):
        if ip in ("0.0.0.0", "::"):
            assert public is not None and public.publish == "public", f"{service} listens on {ip}:{host_port}"
            continue
        assert ip in (LOOPBACK, target.rendered.host.address), f"{service} binds {ip}, not this host's address"
        if len(target.settings.hosts) == 1:
            assert ip == LOOPBACK, f"{service} binds {ip} although no other host needs it"
        assert target.host.socket(f"tcp://{ip}:{host_port}").is_listening
        assert not target.host.socket(f"tcp://0.0.0.0:{host_port}").is_listening
        assert not target.host.socket(f"tcp://:::{host_port}").is_listening
