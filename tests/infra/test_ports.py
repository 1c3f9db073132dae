"""Ports are published as rendered, and nothing listens beyond where a user expects: loopback
on a single host, the host's private address for what other hosts need, all addresses only
for a port declared public (the edge) whose bind setting says so."""

from shipyard.topology import LOOPBACK


def bindings(container) -> set[tuple[str, int, int, str]]:
    """(address, host port, container port, protocol) of each published port."""
    ports = container["HostConfig"]["PortBindings"] or {}
    return {(b["HostIp"] or "0.0.0.0", int(b["HostPort"]), int(key.split("/")[0]), key.split("/")[1])
            for key, binds in ports.items() for b in binds or []}


def _rendered(entry: str) -> tuple[str, int, int, str]:
    """A compose ``ports`` entry (``10.0.0.1:8301:8301/udp``) as ``bindings`` gives it."""
    ip, host_port, container = entry.rsplit(":", 2)
    port, _, protocol = container.partition("/")
    return ip, int(host_port), int(port), protocol or "tcp"


def test_published_ports_are_the_rendered_ones(target, service):
    rendered = target.rendered.compose["services"][service].get("ports", [])
    assert bindings(target.container_of(service)) == {_rendered(entry) for entry in rendered}


def test_only_public_ports_listen_on_every_address(target, service):
    public = target.instance(service).service.port
    for ip, host_port, _, protocol in bindings(target.container_of(service)):
        if ip in ("0.0.0.0", "::"):
            assert public is not None and public.publish == "public", f"{service} listens on {ip}:{host_port}"
            continue
        assert ip in (LOOPBACK, target.rendered.host.address), f"{service} binds {ip}, not this host's address"
        if len(target.settings.hosts) == 1:
            assert ip == LOOPBACK, f"{service} binds {ip} although no other host needs it"
        assert target.host.socket(f"{protocol}://{ip}:{host_port}").is_listening
        assert not target.host.socket(f"{protocol}://0.0.0.0:{host_port}").is_listening
        assert not target.host.socket(f"{protocol}://:::{host_port}").is_listening
