"""Rollout order: which instances converge in which step, on which host (docs/architecture.md,
"Rollout order"). A step finishes on every host before the next begins.

Pure: from the instances and their dependencies (shipyard.topology); no component is named here.
"""

from __future__ import annotations

from shipyard.component import TIERS, Component
from shipyard.topology import Instance, Topology


def _unit(inst: Instance) -> tuple[int, int]:
    """Rollout order key: the tier, and within it one-shots (migrations) first — but a one-shot
    that waits for a long-running service of its own tier (a job run against a running cluster)
    last, after those services on every host."""
    svc = inst.service
    if not svc.one_shot:
        return TIERS.index(svc.tier), 1
    waited = [inst.component.service(w.service) for w in svc.waits]
    after = any(w.tier == svc.tier and not w.one_shot for w in waited)
    return TIERS.index(svc.tier), 2 if after else 0


def dependencies(topo: Topology, inst: Instance) -> tuple[Instance, ...]:
    """What must be up before ``inst``: its own component's waits (same host, or the one
    instance of a service placed once, unless only its start is waited for), and the
    client-facing instances of the components it uses (anywhere)."""
    deps: list[Instance] = []
    for wait in inst.service.waits:
        # On another host, a start is no gate worth a step: what waits only for a start copes with
        # the other not answering yet (it retries, or asks it by address later), and a step would
        # hold it back until the other's whole step is healthy — which may be waiting for it (a
        # node whose start asks a majority of its watchers, spread over other hosts).
        deps += [i for i in topo.instances_of(inst.component.name, wait.service)
                 if i.host.name == inst.host.name
                 or (i.service.placement == "once" and wait.condition != "service_started")]
    for used in inst.uses:
        deps += [i for i in topo.instances_of(used) if i.service.serves_clients]
    return tuple(deps)


def _peers(topo: Topology, inst: Instance) -> tuple[Instance, ...]:
    """The instances a service's health gate waits for together (a quorum: every instance of a
    service with peer ports); empty for any other service."""
    if not inst.service.peer_ports:
        return ()
    return topo.instances_of(inst.component.name, inst.service.name)


def _live_setups(topo: Topology) -> list[tuple[Component, set[tuple[str, str]], set[tuple[str, str]]]]:
    """Each running component's live setup (Component.live_setup): (component, the instances it
    waits for — its own and those of the services it runs after —, the instances that wait for it)."""
    found = []
    for comp in {i.component.name: i.component for i in topo.instances}.values():
        setup = comp.live_setup
        if setup is None or not setup.when(topo.settings):
            continue
        needed = {_key(i) for i in topo.instances if i.component is comp or i.service.name in setup.after}
        before = set(setup.before(topo.settings))
        waiting = {_key(i) for i in topo.instances if (i.component.name, i.service.name) in before}
        found.append((comp, needed, waiting))
    return found


def setups_waited_for(topo: Topology, inst: Instance) -> tuple[Component, ...]:
    """The components whose live setup ``inst`` waits for (it is handed their files)."""
    return tuple(comp for comp in {i.component.name: i.component for i in topo.instances}.values()
                 if comp.live_setup and comp.live_setup.when(topo.settings) and (inst.component.name, inst.service.name) in comp.live_setup.before(topo.settings))


def _gates(topo: Topology) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """Instance → what must have converged in an *earlier* step (not the same one: a live setup
    runs between steps), however many hosts."""
    gates: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for _, needed, waiting in _live_setups(topo):
        for key in waiting:
            gates.setdefault(key, set()).update(needed)
    return gates


def _next_step(topo: Topology, pending: list[Instance], done: set[tuple[str, str]],
               held: set[tuple[str, str]], gates: dict[tuple[str, str], set[tuple[str, str]]]) -> set[tuple[str, str]]:
    """What can converge now, leaving out ``held``: grown to a fixed point, since a same-host
    dependency may join the same step."""
    chosen: set[tuple[str, str]] = set()
    changed = True
    while changed:
        changed = False
        for inst in pending:
            if _key(inst) in chosen or _key(inst) in held or not gates.get(_key(inst), set()) <= done:
                continue
            if any(o.host.name != inst.host.name and _unit(o) < _unit(inst) and inst not in dependencies(topo, o)
                   for o in pending):
                continue  # earlier tiers elsewhere first (but not what waits for this: the exporter of
                # a node on another host waits for the job run against the cluster)
            if all(_key(d) in done or (d.host.name == inst.host.name and _key(d) in chosen)
                   for d in dependencies(topo, inst)):
                chosen.add(_key(inst))
                changed = True
    return chosen


def _key(inst: Instance) -> tuple[str, str]:
    return inst.host.name, inst.name


def rollout_steps(topo: Topology) -> list[dict[str, tuple[str, ...]]]:
    """Steps of a rollout: each maps host name → the services it converges in that step; a
    step finishes on every host before the next starts.

    An instance joins a step once everything of earlier tiers on *other* hosts has converged
    and each of its dependencies has, or (same host) converges in the same step — compose
    orders those itself, so independent work on one host overlaps. One host: a single step.
    Several: data everywhere, then migrations once, then the app, then the edge. Peers (a
    quorum, healthy only together) converge in one step, on every host at once. A service that
    waits for a live setup (Component.live_setup) converges in a step after everything the setup
    waits for, on one host too (``setup_points``: where the setups run).
    """
    gates = _gates(topo)
    pending = list(topo.instances)
    done: set[tuple[str, str]] = set()
    steps: list[dict[str, tuple[str, ...]]] = []
    while pending:
        held: set[tuple[str, str]] = set()
        while True:
            chosen = _next_step(topo, pending, done, held, gates)
            apart = {_key(i) for i in pending if _key(i) in chosen
                     and any(_key(p) not in chosen and _key(p) not in done for p in _peers(topo, i))}
            if not apart:
                break
            held |= apart  # a peer cannot converge yet: neither do the others
        if not chosen:
            stuck = ", ".join(f"{i.name} on {i.host.name}" for i in pending)
            raise ValueError(f"rollout order has a cycle or an unplaced dependency: {stuck}")
        step: dict[str, tuple[str, ...]] = {}
        for inst in pending:
            if _key(inst) in chosen:
                step[inst.host.name] = step.get(inst.host.name, ()) + (inst.name,)
        steps.append(step)
        done |= chosen
        pending = [i for i in pending if _key(i) not in chosen]
    return steps


def setup_points(topo: Topology, steps: list[dict[str, tuple[str, ...]]]) -> dict[int, tuple[Component, ...]]:
    """Step index (0-based) → the components whose live setup runs right after that step: the
    step in which the last instance it waits for converged — or, when no service waits for it,
    the last step (a setup that fails then leaves every service converged)."""
    converged_in = {(host, name): index for index, step in enumerate(steps) for host, names in step.items() for name in names}
    points: dict[int, tuple[Component, ...]] = {}
    for comp, needed, waiting in _live_setups(topo):
        index = max(converged_in[k] for k in needed) if waiting else len(steps) - 1
        points[index] = points.get(index, ()) + (comp,)
    return points
