"""Instances, placement and addressing: the one place that decides where each instance runs,
what it publishes, and every address handed to anything else (DESIGN.md "Addressing").

Same host: one compose network, so a consumer reaches a provider by service name and
container port. Different hosts: each host runs its own compose project, so the consumer
uses the provider host's ``address`` and the port the provider publishes *there* — which is
the same function (``binding``) that writes the provider's ``ports:``.

Pure: components come from the registry; no component is named here.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipyard.component import TIERS, Component, Service
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


def port_collisions(settings: EnvironmentSettings) -> list[PortClash]:
    """Every two instances that would publish the same port on one host (0.0.0.0 overlaps every
    address): found from the settings, before anything is touched."""
    key = port_key

    clashes = []
    for host in settings.hosts:
        seen: list[tuple[str, int, Instance]] = []
        for inst in instances_on(settings, host):
            bound = binding(settings, inst)
            if bound is None:
                continue
            for ip, port, other in seen:
                if port == bound[1] and addresses_overlap(ip, bound[0]):
                    names = tuple(i.service.port.setting for i in (other, inst) if i.service.port and i.service.port.setting)
                    clashes.append(PortClash(host.name, port, names,
                                             f"{key(other)} and {key(inst)} both publish {port} ({ip} and {bound[0]})"))
            seen.append((bound[0], bound[1], inst))
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


# --- rollout order ------------------------------------------------------------------------------

def _unit(inst: Instance) -> tuple[int, int]:
    """Rollout order key: the tier, and within it one-shots (migrations) first."""
    return TIERS.index(inst.service.tier), 0 if inst.service.one_shot else 1


def dependencies(settings: EnvironmentSettings, inst: Instance) -> tuple[Instance, ...]:
    """What must be up before ``inst``: its own component's waits (same host), and the
    client-facing instances of the components it uses (anywhere)."""
    deps: list[Instance] = []
    for wait in inst.service.waits:
        deps += [i for i in instances_of(settings, inst.component.name, wait.service)
                 if i.host.name == inst.host.name or i.service.placement == "once"]
    for used in inst.component.uses:
        deps += [i for i in instances_of(settings, used) if i.service.serves_clients]
    return tuple(deps)


def rollout_steps(settings: EnvironmentSettings) -> list[dict[str, tuple[str, ...]]]:
    """Steps of a rollout: each maps host name → the services it converges in that step; a
    step finishes on every host before the next starts.

    An instance joins a step once everything of earlier tiers on *other* hosts has converged
    and each of its dependencies has, or (same host) converges in the same step — compose
    orders those itself, so independent work on one host overlaps. One host: a single step.
    Several: data everywhere, then migrations once, then the app, then the edge.
    """
    pending = list(instances(settings))
    done: set[tuple[str, str]] = set()
    steps: list[dict[str, tuple[str, ...]]] = []
    key = lambda i: (i.host.name, i.name)  # noqa: E731
    while pending:
        chosen: set[tuple[str, str]] = set()
        changed = True
        while changed:
            changed = False
            for inst in pending:
                if key(inst) in chosen:
                    continue
                earlier_elsewhere = [o for o in pending if o.host.name != inst.host.name and _unit(o) < _unit(inst)]
                if earlier_elsewhere:
                    continue
                deps_ready = all(key(d) in done or (d.host.name == inst.host.name and key(d) in chosen)
                                 for d in dependencies(settings, inst))
                if deps_ready:
                    chosen.add(key(inst))
                    changed = True
        if not chosen:
            stuck = ", ".join(f"{i.name} on {i.host.name}" for i in pending)
            raise ValueError(f"rollout order has a cycle or an unplaced dependency: {stuck}")
        step: dict[str, tuple[str, ...]] = {}
        for inst in pending:
            if key(inst) in chosen:
                step[inst.host.name] = step.get(inst.host.name, ()) + (inst.name,)
        steps.append(step)
        done |= chosen
        pending = [i for i in pending if key(i) not in chosen]
    return steps
