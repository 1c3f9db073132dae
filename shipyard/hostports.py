"""What already holds a port on a host, against what a deploy will publish there — pure: the
apply layer reads the host (``/proc/net/tcp*`` and ``docker ps``) in the facts phase and a deploy
that would fail to bind stops before anything on the host is touched.

A port held by this environment's own containers is not a clash (a re-deploy publishes it
again); any other listener is: a process of the host, or another compose project's container
(whose published ports do not always show as listeners, with Docker's userland proxy off).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from shipyard import topology
from shipyard.settings import EnvironmentSettings, HostSettings

_LISTEN = "0A"  # the TCP state column of /proc/net/tcp*


@dataclass(frozen=True)
class Holder:
    address: str
    port: int
    what: str  # "a process of the host", "container other-project-web-1"


def _proc_address(hex_address: str) -> str:
    """/proc/net/tcp*'s local address (little-endian 32-bit words of hex) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def listeners(proc_net_tcp: str) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket in the text of /proc/net/tcp and tcp6."""
    found = []
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[3] != _LISTEN or ":" not in fields[1]:
            continue
        address, port = fields[1].split(":")
        found.append((_proc_address(address), int(port, 16)))
    return found


def published_by_containers(docker_ps: str) -> list[tuple[str, str, str, int]]:
    """(compose project, container, address, port) of every published TCP port, from
    ``docker ps --format '{{.Label "com.docker.compose.project"}}\\t{{.Names}}\\t{{.Ports}}'``."""
    found = []
    for line in docker_ps.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        project, name, ports = parts
        for mapping in ports.split(", "):
            if "->" not in mapping or not mapping.endswith("/tcp"):
                continue
            host_side = mapping.split("->")[0]
            address, _, ports_text = host_side.rpartition(":")
            # Consecutive ports are listed as one range: 10.0.0.1:8300-8301->8300-8301/tcp.
            first, _, last = ports_text.partition("-")
            for port in range(int(first), int(last or first) + 1):
                found.append((project, name, address.strip("[]") or "0.0.0.0", port))
    return found


def holders(proc_net_tcp: str, docker_ps: str, project: str) -> list[Holder]:
    """What holds a port on the host, except this environment's own containers."""
    ours = [(a, p) for proj, _, a, p in published_by_containers(docker_ps) if proj == project]
    others = [Holder(a, p, f"container {name}") for proj, name, a, p in published_by_containers(docker_ps)
              if proj != project]
    held = [Holder(a, p, "a process of the host") for a, p in listeners(proc_net_tcp)
            if not any(p == op and topology.addresses_overlap(a, oa) for oa, op in ours)
            and not any(p == o.port and topology.addresses_overlap(a, o.address) for o in others)]
    return others + held


def clashes(settings: EnvironmentSettings, host: HostSettings, held: list[Holder]) -> list[str]:
    """One line per TCP port this host's instances would publish that something else holds."""
    lines = []
    for pub in topology.build(settings).publications(host):
        if pub.protocol != "tcp":
            continue  # what holds a UDP port is not read (/proc/net/udp): a bind failure names it
        for holder in held:
            if holder.port == pub.port and topology.addresses_overlap(holder.address, pub.address):
                lines.append(f"{pub.what} publishes {pub.address}:{pub.port}, which "
                             f"{holder.what} already holds ({holder.address}:{holder.port})")
                break
    return lines
