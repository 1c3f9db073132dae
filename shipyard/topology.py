"""Instances, placement and addressing: the one place that decides where each instance runs,
what it publishes, and every address handed to anything else (docs/architecture.md,
"Addressing: the topology").

Same host: one compose network, so a consumer reaches a provider by service name and
container port. Different hosts: each host runs its own compose project, so the consumer
uses the provider host's ``address`` and the port the provider publishes *there* — which is
the same function (``binding``) that writes the provider's ``ports:``.

Pure: components come from the registry; no component is named here.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipyard.component import Component, Service
from shipyard.components import COMPONENTS
from shipyard.release import COLOURS
from shipyard.settings import EnvironmentSettings, HostSettings

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Instance:
    """One compose service on one host: ``postgres-replica-2`` on ``data-1``."""

    component: Component
    service: Service
    name: str
    number: int | None  # 2 for ``postgres-replica-2``; None for a service that is not numbered
    host: HostSettings
    colour: str | None = None  # a coloured service's instance: ``blue`` or ``green`` (shipyard.release)

    @property
    def tier(self) -> str:
        return self.service.tier


def _count(service: Service, settings: EnvironmentSettings) -> int:
    return service.instances(settings) if service.instances else 1


def _scale(service: Service, settings: EnvironmentSettings) -> int:
    return service.scale(settings) if service.scale else 1


def instances(settings: EnvironmentSettings) -> tuple[Instance, ...]:
    """Every instance of every component in the environment, in registry order."""
    result: list[Instance] = []
    for comp in COMPONENTS:
        for svc in comp.services:
            hosts = settings.hosts_with_role(svc.group)
            if not hosts or _scale(svc, settings) == 0:
                continue
            if svc.coloured:
                # Numbered coloured services are not needed yet: refused by the spec test.
                placed = hosts[:1] if svc.placement in ("once", "spread") else hosts
                result += [Instance(comp, svc, f"{svc.name}-{colour}", None, h, colour)
                           for colour in COLOURS for h in placed]
                continue
            if svc.instances is None:
                placed = hosts[:1] if svc.placement in ("once", "spread") else hosts
                result += [Instance(comp, svc, svc.name, None, h) for h in placed]
                continue
            for number in range(1, _count(svc, settings) + 1):
                if svc.placement == "spread":
                    where: tuple[HostSettings, ...] = (hosts[(number - 1) % len(hosts)],)
                elif svc.placement == "once":
                    where = hosts[:1]
                else:
                    where = hosts
                result += [Instance(comp, svc, f"{svc.name}-{number}", number, h) for h in where]
    return tuple(result)


def instances_on(settings: EnvironmentSettings, host: HostSettings) -> tuple[Instance, ...]:
    return tuple(i for i in instances(settings) if i.host.name == host.name)


def instances_of(settings: EnvironmentSettings, component: str, service: str | None = None) -> tuple[Instance, ...]:
    """Instances of a component (or one of its services), every host, in order."""
    return tuple(i for i in instances(settings)
                 if i.component.name == component and (service is None or i.service.name == service))


def find(settings: EnvironmentSettings, name: str, host: HostSettings | None = None) -> Instance:
    """The instance called ``name`` (on ``host``, or the first one of that name)."""
    for inst in instances(settings):
        if inst.name == name and (host is None or inst.host.name == host.name):
            return inst
    raise KeyError(f"no instance {name}" + (f" on host {host.name}" if host else ""))


def instance_names(settings: EnvironmentSettings, component: str, service: str | None = None) -> tuple[str, ...]:
    names: list[str] = []
    for inst in instances_of(settings, component, service):
        if inst.name not in names:
            names.append(inst.name)
    return tuple(names)


def consumers(settings: EnvironmentSettings, component: Component) -> tuple[Instance, ...]:
    """Instances of other components that use ``component``."""
    return tuple(i for i in instances(settings) if component.name in i.component.uses)


def needs_remote_access(settings: EnvironmentSettings, inst: Instance) -> bool:
    """True when a consumer of the instance's component runs on another host than it does."""
    if not inst.service.serves_clients:
        return False
    return any(c.host.name != inst.host.name for c in consumers(settings, inst.component))


def host_port(settings: EnvironmentSettings, inst: Instance) -> int | None:
    """The host port the settings give an instance (None: no setting, or set to null)."""
    port = inst.service.port
    if port is None or port.setting is None:
        return None
    base = getattr(settings.ports, port.setting)
    if base is None:
        return None
    if inst.colour is not None:
        # Both colours run side by side during a release: the second one publishes the next port.
        return base + COLOURS.index(inst.colour)
    return base + (inst.number + port.instance_offset if inst.number is not None else 0)


def binding(settings: EnvironmentSettings, inst: Instance) -> tuple[str, int] | None:
    """(bind address, host port) an instance publishes on its host, or None.

    Loopback unless a consumer on another host must reach it; then the host's own (private)
    address — never 0.0.0.0 unless a ``public`` port's setting says so.
    """
    port = inst.service.port
    if port is None:
        return None
    if port.publish == "public":
        bind = getattr(settings.ports, port.bind_setting) if port.bind_setting else port.bind_default
        return bind, host_port(settings, inst) or port.container
    chosen = host_port(settings, inst)
    if needs_remote_access(settings, inst):
        colour_offset = COLOURS.index(inst.colour) if inst.colour else 0
        return inst.host.address, chosen or port.container + colour_offset
    if port.publish == "remote" or chosen is None:
        return None
    return LOOPBACK, chosen


def published(settings: EnvironmentSettings, host: HostSettings, name: str) -> tuple[str, int] | None:
    """``binding`` of the instance called ``name`` on ``host`` (verify, drills, benchmarks)."""
    return binding(settings, find(settings, name, host))


@dataclass(frozen=True)
class PortClash:
    host: str
    port: int
    settings: tuple[str, ...]  # the ``ports`` keys involved (a key may appear with an instance offset)
    what: str
    fix: str | None = None  # when changing a ``ports`` key is not the fix


def port_key(i: Instance) -> str:
    """The setting an instance's host port comes from, for messages: ``ports.redis + 1 (redis-replica-1)``."""
    port = i.service.port
    if port is None or port.setting is None:
        return f"{i.name}'s port"
    offset = f" + {i.number + port.instance_offset}" if i.number else ""
    if i.colour is not None and COLOURS.index(i.colour):
        offset = f" + {COLOURS.index(i.colour)}"
    return f"ports.{port.setting}{offset} ({i.name})"


def addresses_overlap(a: str, b: str) -> bool:
    """Two bind addresses of one host that cannot both hold a port (a wildcard holds every one)."""
    return a == b or bool({a, b} & WILDCARDS)


WILDCARDS = {"0.0.0.0", "::"}


@dataclass(frozen=True)
class Publication:
    """One port an instance publishes on its host."""

    address: str
    port: int
    protocol: str  # "tcp" or "udp"
    instance: Instance
    setting: str | None  # the ``ports`` key it comes from (None: a peer port, at its own number)
    what: str  # for messages: ``ports.redis + 1 (redis-replica-1)``, ``consul-2's peer port 8301/udp``


def publications(settings: EnvironmentSettings, host: HostSettings) -> list[Publication]:
    """Everything the host's instances publish: client ports and peer ports."""
    found = []
    for inst in instances_on(settings, host):
        bound = binding(settings, inst)
        if bound is not None:
            setting = inst.service.port.setting if inst.service.port else None
            found.append(Publication(bound[0], bound[1], "tcp", inst, setting, port_key(inst)))
        for address_, port, protocol in peer_bindings(settings, inst):
            found.append(Publication(address_, port, protocol, inst, None, f"{inst.name}'s peer port {port}/{protocol}"))
    return found


def port_collisions(settings: EnvironmentSettings) -> list[PortClash]:
    """Every two instances that would publish the same port on one host (0.0.0.0 overlaps every
    address): found from the settings, before anything is touched."""
    clashes = []
    for host in settings.hosts:
        seen: list[Publication] = []
        peers: dict[tuple[str, str], list[Publication]] = {}  # two peers on one host: one message
        for pub in publications(settings, host):
            for other in seen:
                if pub.port != other.port or pub.protocol != other.protocol \
                        or not addresses_overlap(pub.address, other.address):
                    continue
                names = tuple(p.setting for p in (other, pub) if p.setting)
                if names:
                    clashes.append(PortClash(host.name, pub.port, names, f"{other.what} and {pub.what} both publish "
                                             f"{pub.port} ({other.address} and {pub.address})"))
                else:
                    peers.setdefault((other.instance.name, pub.instance.name), []).append(pub)
            seen.append(pub)
        for (first, second), pubs in peers.items():
            # Peer ports keep their numbers (they are advertised as is): the placement is the fix.
            svc, component = pubs[0].instance.service, pubs[0].instance.component
            count = len(instances_of(settings, component.name, svc.name))
            ports = ", ".join(f"{p.port}/{p.protocol}" for p in pubs)
            clashes.append(PortClash(host.name, pubs[0].port, (), f"{first} and {second} would both publish the peer "
                                     f"ports {ports} on {pubs[0].address}",
                                     f"list at least {count} hosts in group '{svc.group}' ({svc.name} runs one instance "
                                     f"per host once its instances span hosts), or exactly one"))
    return clashes


def address(settings: EnvironmentSettings, inst: Instance, from_host: HostSettings) -> Endpoint:
    """How something on ``from_host`` reaches ``inst``: service name on its own host, the
    provider host's address and published port from another."""
    port = inst.service.port
    if port is None:
        raise KeyError(f"{inst.name} serves no port")
    if inst.host.name == from_host.name:
        return Endpoint(inst.name, port.container)
    bound = binding(settings, inst)
    if bound is None or bound[0] == LOOPBACK:
        raise AssertionError(f"{inst.name} on {inst.host.name} is not published for host {from_host.name}")
    return Endpoint(inst.host.address, bound[1])


def announced(settings: EnvironmentSettings, inst: Instance) -> Endpoint:
    """The address an instance gives others for itself (what Sentinel hands to clients): its
    service name when every consumer shares its host, its host's address and port otherwise."""
    port = inst.service.port
    assert port is not None, inst.name
    if not needs_remote_access(settings, inst):
        return Endpoint(inst.name, port.container)
    bound = binding(settings, inst)
    assert bound is not None
    return Endpoint(inst.host.address, bound[1])


# --- peers: the instances of one service talking among themselves (raft, gossip) ------------

def peers_span_hosts(settings: EnvironmentSettings, inst: Instance) -> bool:
    """True when instances of ``inst``'s service run on more than one host."""
    return len({i.host.name for i in instances_of(settings, inst.component.name, inst.service.name)}) > 1


def peer_advertised(settings: EnvironmentSettings, inst: Instance) -> str | None:
    """The address an instance advertises to its peers: its host's once its service spans hosts
    (the peers reach it at the ports it publishes there); None while they share one host and
    meet on its compose network."""
    if inst.service.peer_ports and peers_span_hosts(settings, inst):
        return inst.host.address
    return None


def peer_bindings(settings: EnvironmentSettings, inst: Instance) -> tuple[tuple[str, int, str], ...]:
    """(bind address, port, protocol) of each peer port the instance publishes: on its host's
    private address at the container's own number once its service spans hosts; none before."""
    advertised = peer_advertised(settings, inst)
    if advertised is None:
        return ()
    return tuple((advertised, p.container, proto) for p in inst.service.peer_ports for proto in p.protocols)


def peer_endpoints(settings: EnvironmentSettings, component: str, service: str, port: int) -> tuple[Endpoint, ...]:
    """Every instance of a service (any host) as its peers reach it at peer port ``port``."""
    return tuple(Endpoint(peer_advertised(settings, inst) or inst.name, port)
                 for inst in instances_of(settings, component, service))


def endpoints(settings: EnvironmentSettings, component: str, service: str | None,
              from_host: HostSettings) -> tuple[Endpoint, ...]:
    """Every client-facing instance of a component (or of one service) as seen from ``from_host``.
    An "each"-placed service reached from a host that runs it too is reached there only."""
    result: list[Endpoint] = []
    for inst in instances_of(settings, component, service):
        if not inst.service.serves_clients:
            continue
        endpoint = address(settings, inst, from_host)
        if endpoint not in result:
            result.append(endpoint)
    return tuple(result)
