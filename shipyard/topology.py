"""Instances, placement and addressing: the one place that decides where each instance runs,
what it publishes, and every address handed to anything else (docs/architecture.md,
"Addressing: the topology").

Same host: one compose network, so a consumer reaches a provider by service name and
container port. Different hosts: each host runs its own compose project, so the consumer
uses the provider host's ``address`` and the port the provider publishes *there* — which is
the same function (``binding``) that writes the provider's ``ports:``.

``build(settings)`` makes a ``Topology`` once per settings object — every instance, indexed by
name, host, component and consumer — and render, plan, status, releases and the rollout order
ask it; nothing recomputes the placement. Settings are frozen, so the cache cannot go stale.

Pure: components come from the registry; no component is named here.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from shipyard.component import Component, Port, SecretFile, Service
from shipyard.errors import ShipyardError
from shipyard.components import COMPONENTS
from shipyard.bluegreen import COLOURS
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
    colour: str | None = None  # a coloured service's instance: ``blue`` or ``green`` (shipyard.bluegreen)
    # Its secret files under the environment's settings (Service.secret_files).
    secrets: tuple[SecretFile, ...] = ()

    @property
    def tier(self) -> str:
        return self.service.tier

    @property
    def uses(self) -> tuple[str, ...]:
        """The components it consumes (its service's own list, else its component's)."""
        return self.component.uses if self.service.uses is None else self.service.uses


def _count(service: Service, settings: EnvironmentSettings) -> int:
    return service.instances(settings) if service.instances else 1


def _scale(service: Service, settings: EnvironmentSettings) -> int:
    return service.scale(settings) if service.scale else 1


def _placed(settings: EnvironmentSettings) -> tuple[Instance, ...]:
    """Every instance of every component in the environment, in registry order."""
    result: list[Instance] = []
    for comp in COMPONENTS:
        for svc in comp.services:
            hosts = settings.hosts_with_role(svc.group)
            if svc.not_beside:
                taken = {i.host.name for i in result if i.component is comp and i.service.name == svc.not_beside}
                hosts = tuple(h for h in hosts if h.name not in taken)
            if not hosts or _scale(svc, settings) == 0:
                continue
            files = svc.secret_files(settings)
            if svc.coloured:
                # Numbered coloured services are not needed yet: refused by the spec test.
                placed = hosts[:1] if svc.placement in ("once", "spread") else hosts
                result += [Instance(comp, svc, f"{svc.name}-{colour}", None, h, colour, files)
                           for colour in COLOURS for h in placed]
                continue
            if svc.instances is None:
                placed = hosts[:1] if svc.placement in ("once", "spread") else hosts
                result += [Instance(comp, svc, svc.name, None, h, secrets=files) for h in placed]
                continue
            for number in range(1, _count(svc, settings) + 1):
                if svc.placement == "spread":
                    where: tuple[HostSettings, ...] = (hosts[(number - 1 + svc.spread_from) % len(hosts)],)
                elif svc.placement == "once":
                    where = hosts[:1]
                else:
                    where = hosts
                result += [Instance(comp, svc, f"{svc.name}-{number}", number, h, secrets=files)
                           for h in where]
    return tuple(result)


def _index(items: tuple[Instance, ...], *keys) -> dict:
    index: dict = {}
    for inst in items:
        for key in keys:
            index.setdefault(key(inst), []).append(inst)
    return {k: tuple(v) for k, v in index.items()}


@dataclass(frozen=True)
class PortClash:
    host: str
    port: int
    settings: tuple[str, ...]  # the ``ports`` keys involved (a key may appear with an instance offset)
    what: str
    fix: str | None = None  # when changing a ``ports`` key is not the fix


WILDCARDS = {"0.0.0.0", "::"}


def addresses_overlap(a: str, b: str) -> bool:
    """Two bind addresses of one host that cannot both hold a port (a wildcard holds every one)."""
    return a == b or bool({a, b} & WILDCARDS)


def port_key(i: Instance) -> str:
    """The setting an instance's host port comes from, for messages: ``ports.redis + 1 (redis-replica-1)``."""
    port = i.service.port
    if port is None or port.setting is None:
        return f"{i.name}'s port"
    offset = f" + {i.number + port.instance_offset}" if i.number else ""
    if i.colour is not None and COLOURS.index(i.colour):
        offset = f" + {COLOURS.index(i.colour)}"
    return f"ports.{port.setting}{offset} ({i.name})"


@dataclass(frozen=True)
class Publication:
    """One port an instance publishes on its host."""

    address: str
    port: int
    protocol: str  # "tcp" or "udp"
    instance: Instance
    setting: str | None  # the ``ports`` key it comes from (None: a peer port, at its own number)
    what: str  # for messages: ``ports.redis + 1 (redis-replica-1)``, ``consul-2's peer port 8301/udp``


@dataclass(frozen=True)
class Topology:
    """Where every instance of an environment runs and how each is reached: built once per
    settings (``build``), indexed by instance name, host, component (and service) and consumer."""

    settings: EnvironmentSettings
    instances: tuple[Instance, ...]
    _by_name: dict[str, tuple[Instance, ...]] = field(repr=False)
    _on_host: dict[str, tuple[Instance, ...]] = field(repr=False)
    _of: dict[tuple[str, str | None], tuple[Instance, ...]] = field(repr=False)
    _consumers: dict[str, tuple[Instance, ...]] = field(repr=False)

    @classmethod
    def of(cls, settings: EnvironmentSettings) -> Topology:
        placed = _placed(settings)
        of = _index(placed, lambda i: (i.component.name, None), lambda i: (i.component.name, i.service.name))
        consumers = {comp.name: tuple(i for i in placed if comp.name in i.uses) for comp in COMPONENTS}
        return cls(settings, placed, _index(placed, lambda i: i.name), _index(placed, lambda i: i.host.name), of,
                   consumers)

    # --- instances ------------------------------------------------------------------------------

    def instances_on(self, host: HostSettings) -> tuple[Instance, ...]:
        return self._on_host.get(host.name, ())

    def instances_of(self, component: str, service: str | None = None) -> tuple[Instance, ...]:
        """Instances of a component (or one of its services), every host, in order."""
        return self._of.get((component, service), ())

    def find(self, name: str, host: HostSettings | None = None) -> Instance:
        """The instance called ``name`` (on ``host``, or the first one of that name)."""
        for inst in self._by_name.get(name, ()):
            if host is None or inst.host.name == host.name:
                return inst
        raise KeyError(f"no instance {name}" + (f" on host {host.name}" if host else ""))

    def instance_names(self, component: str, service: str | None = None) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i.name for i in self.instances_of(component, service)))

    def consumers(self, component: Component) -> tuple[Instance, ...]:
        """Instances of other components that use ``component``."""
        return self._consumers.get(component.name, ())

    def needs_remote_access(self, inst: Instance) -> bool:
        """True when a consumer of the instance's component runs on another host than it does,
        or a service of its own component that waits for it (Service.waits: the log shipper on
        every host, for the store on one)."""
        if not inst.service.serves_clients:
            return False
        waiting = tuple(i for i in self.instances_of(inst.component.name)
                        if any(w.service == inst.service.name for w in i.service.waits))
        if inst.service.port is not None and inst.service.port.peers_reach and self.peers_span_hosts(inst):
            return True
        return any(c.host.name != inst.host.name for c in self.consumers(inst.component) + waiting)

    # --- ports ----------------------------------------------------------------------------------

    def host_port(self, inst: Instance) -> int | None:
        """The host port the settings give an instance (None: no setting, or set to null)."""
        port = inst.service.port
        if port is None or port.setting is None:
            return None
        base = getattr(self.settings.ports, port.setting)
        if base is None:
            return None
        if inst.colour is not None:
            # Both colours run side by side during a release: the second one publishes the next port.
            return base + COLOURS.index(inst.colour)
        return base + (inst.number + port.instance_offset if inst.number is not None else 0)

    def binding(self, inst: Instance) -> tuple[str, int] | None:
        """(bind address, host port) an instance publishes on its host, or None.

        Loopback unless a consumer on another host must reach it; then the host's own (private)
        address — never 0.0.0.0 unless a ``public`` port's setting says so.
        """
        port = inst.service.port
        if port is None:
            return None
        if port.publish == "public":
            bind = getattr(self.settings.ports, port.bind_setting) if port.bind_setting else port.bind_default
            return bind, self.host_port(inst) or port.container
        chosen = self.host_port(inst)
        if port.publish == "hosts":
            return inst.host.address, chosen or port.container
        if self.needs_remote_access(inst):
            colour_offset = COLOURS.index(inst.colour) if inst.colour else 0
            return inst.host.address, chosen or port.container + colour_offset
        if port.publish == "remote" or chosen is None:
            return None
        return LOOPBACK, chosen

    def published(self, host: HostSettings, name: str) -> tuple[str, int] | None:
        """``binding`` of the instance called ``name`` on ``host`` (verify, drills, benchmarks)."""
        return self.binding(self.find(name, host))

    def extra_bindings(self, inst: Instance) -> list[tuple[str, int, Port]]:
        """(bind address, host port, port) of each extra public port (Service.extra_ports) the
        settings publish: on its bind setting, at its ``ports`` key (or its container port)."""
        found = []
        for port in inst.service.extra_ports:
            if port.when is not None and not port.when(self.settings):
                continue
            bind = getattr(self.settings.ports, port.bind_setting) if port.bind_setting else port.bind_default
            chosen = getattr(self.settings.ports, port.setting) if port.setting else None
            found.append((bind, chosen or port.container, port))
        return found

    def published_extra(self, host: HostSettings, name: str, setting: str) -> tuple[str, int] | None:
        """(bind address, host port) of the extra port ``setting`` (a ``ports`` key) of the instance
        called ``name`` on ``host`` (None: not published under these settings)."""
        for bind, port, declared in self.extra_bindings(self.find(name, host)):
            if declared.setting == setting:
                return bind, port
        return None

    def publications(self, host: HostSettings) -> list[Publication]:
        """Everything the host's instances publish: client ports and peer ports."""
        found = []
        for inst in self.instances_on(host):
            bound = self.binding(inst)
            if bound is not None:
                setting = inst.service.port.setting if inst.service.port else None
                found.append(Publication(bound[0], bound[1], "tcp", inst, setting, port_key(inst)))
            for address_, port, declared in self.extra_bindings(inst):
                found.append(Publication(address_, port, "tcp", inst, declared.setting,
                                         f"ports.{declared.setting} ({inst.name})"))
            for address_, port, protocol in self.peer_bindings(inst):
                found.append(Publication(address_, port, protocol, inst, None,
                                         f"{inst.name}'s peer port {port}/{protocol}"))
        return found

    def port_collisions(self) -> list[PortClash]:
        """Every two instances that would publish the same port on one host (0.0.0.0 overlaps every
        address): found from the settings, before anything is touched."""
        clashes = []
        for host in self.settings.hosts:
            seen: list[Publication] = []
            peers: dict[tuple[str, str], list[Publication]] = {}  # two peers on one host: one message
            for pub in self.publications(host):
                for other in seen:
                    if pub.port != other.port or pub.protocol != other.protocol \
                            or not addresses_overlap(pub.address, other.address):
                        continue
                    names = tuple(p.setting for p in (other, pub) if p.setting)
                    if names:
                        clashes.append(PortClash(host.name, pub.port, names, f"{other.what} and {pub.what} both "
                                                 f"publish {pub.port} ({other.address} and {pub.address})"))
                    else:
                        peers.setdefault((other.instance.name, pub.instance.name), []).append(pub)
                seen.append(pub)
            clashes += [self._peer_clash(host, first, second, pubs) for (first, second), pubs in peers.items()]
        return clashes

    def _peer_clash(self, host: HostSettings, first: str, second: str, pubs: list[Publication]) -> PortClash:
        # Peer ports keep their numbers (they are advertised as is): the placement is the fix.
        svc = pubs[0].instance.service
        count = len(self.peers(pubs[0].instance))
        ports = ", ".join(f"{p.port}/{p.protocol}" for p in pubs)
        return PortClash(host.name, pubs[0].port, (), f"{first} and {second} would both publish the peer "
                         f"ports {ports} on {pubs[0].address}",
                         f"list at least {count} hosts in group '{svc.group}' ({svc.name} runs one instance "
                         f"per host once its instances span hosts), or exactly one")

    # --- addresses ------------------------------------------------------------------------------

    def address(self, inst: Instance, from_host: HostSettings) -> Endpoint:
        """How something on ``from_host`` reaches ``inst``: service name on its own host, the
        provider host's address and published port from another."""
        port = inst.service.port
        if port is None:
            raise KeyError(f"{inst.name} serves no port")
        if inst.host.name == from_host.name:
            return Endpoint(inst.name, port.container)
        bound = self.binding(inst)
        if bound is None or bound[0] == LOOPBACK:
            # The placement rules publish every port a consumer on another host uses; reaching
            # here is a component asking for an address it does not consume (a spec error).
            raise ShipyardError(f"environment {self.settings.name}, host {from_host.name}",
                                f"{inst.name} on {inst.host.name} is not published for host {from_host.name}",
                                f"declare {inst.component.name} in the `uses` of the component that asks "
                                f"for its address (shipyard/components/<name>/__init__.py)")
        return Endpoint(inst.host.address, bound[1])

    def announced(self, inst: Instance) -> Endpoint:
        """The address an instance gives others for itself (what Sentinel hands to clients): its
        service name when every consumer shares its host, its host's address and port otherwise."""
        port = inst.service.port
        if port is None:
            raise KeyError(f"{inst.name} serves no port")
        bound = self.binding(inst) if self.needs_remote_access(inst) else None
        if bound is None:
            return Endpoint(inst.name, port.container)
        return Endpoint(inst.host.address, bound[1])

    def endpoints(self, component: str, service: str | None, from_host: HostSettings) -> tuple[Endpoint, ...]:
        """Every client-facing instance of a component (or of one service) as seen from
        ``from_host``. An "each"-placed service reached from a host that runs it too is reached
        there only."""
        result: list[Endpoint] = []
        for inst in self.instances_of(component, service):
            if not inst.service.serves_clients:
                continue
            endpoint = self.address(inst, from_host)
            if endpoint not in result:
                result.append(endpoint)
        return tuple(result)

    # --- peers: the instances of one service talking among themselves (raft, gossip) --------

    def peers(self, inst: Instance) -> tuple[Instance, ...]:
        """``inst`` and its peers: every instance of its component's services that declare peer
        ports (PeerPort); none for a service without."""
        if not inst.service.peer_ports:
            return ()
        return tuple(i for i in self.instances_of(inst.component.name) if i.service.peer_ports)

    def peers_span_hosts(self, inst: Instance) -> bool:
        """True when ``inst``'s peers run on more than one host."""
        return len({i.host.name for i in self.peers(inst)}) > 1

    def peer_advertised(self, inst: Instance) -> str | None:
        """The address an instance advertises to its peers: its host's once its service spans
        hosts (the peers reach it at the ports it publishes there); None while they share one host
        and meet on its compose network."""
        if inst.service.peer_ports and self.peers_span_hosts(inst):
            return inst.host.address
        return None

    def peer_bindings(self, inst: Instance) -> tuple[tuple[str, int, str], ...]:
        """(bind address, port, protocol) of each peer port the instance publishes: on its host's
        private address at the container's own number once its service spans hosts; none before."""
        advertised = self.peer_advertised(inst)
        if advertised is None:
            return ()
        return tuple((advertised, p.container, proto) for p in inst.service.peer_ports for proto in p.protocols)

    def peer_endpoints(self, component: str, service: str, port: int) -> tuple[Endpoint, ...]:
        """Every instance of a service (any host) as its peers reach it at peer port ``port``."""
        return tuple(Endpoint(self.peer_advertised(inst) or inst.name, port)
                     for inst in self.instances_of(component, service))


# Settings objects are frozen: a topology built for one stays right. Keyed by identity (the
# settings models are not hashable); the entry holds the settings, so an id is not reused
# while it is cached.
_BUILT: OrderedDict[int, tuple[EnvironmentSettings, Topology]] = OrderedDict()
_BUILT_MAX = 8


def build(settings: EnvironmentSettings) -> Topology:
    """The topology of ``settings``, built once per settings object."""
    entry = _BUILT.get(id(settings))
    if entry is not None and entry[0] is settings:
        _BUILT.move_to_end(id(settings))
        return entry[1]
    topo = Topology.of(settings)
    _BUILT[id(settings)] = (settings, topo)
    while len(_BUILT) > _BUILT_MAX:
        _BUILT.popitem(last=False)
    return topo
