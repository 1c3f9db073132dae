"""Rollout order: which instances converge in which step, on which host (docs/architecture.md,
"Rollout order"). A step finishes on every host before the next begins.

Pure: from the instances and their dependencies (shipyard.topology); no component is named here.
"""

from __future__ import annotations

from shipyard.component import TIERS
from shipyard.settings import EnvironmentSettings
from shipyard.topology import Instance, instances, instances_of


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


def _peers(settings: EnvironmentSettings, inst: Instance) -> tuple[Instance, ...]:
    """The instances a service's health gate waits for together (a quorum: every instance of a
    service with peer ports); empty for any other service."""
    if not inst.service.peer_ports:
        return ()
    return instances_of(settings, inst.component.name, inst.service.name)


def _next_step(settings: EnvironmentSettings, pending: list[Instance], done: set[tuple[str, str]],
               held: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """What can converge now, leaving out ``held``: grown to a fixed point, since a same-host
    dependency may join the same step."""
    chosen: set[tuple[str, str]] = set()
    changed = True
    while changed:
        changed = False
        for inst in pending:
            if _key(inst) in chosen or _key(inst) in held:
                continue
            if any(o.host.name != inst.host.name and _unit(o) < _unit(inst) for o in pending):
                continue  # earlier tiers elsewhere first
            if all(_key(d) in done or (d.host.name == inst.host.name and _key(d) in chosen)
                   for d in dependencies(settings, inst)):
                chosen.add(_key(inst))
                changed = True
    return chosen


def _key(inst: Instance) -> tuple[str, str]:
    return inst.host.name, inst.name


def rollout_steps(settings: EnvironmentSettings) -> list[dict[str, tuple[str, ...]]]:
    """Steps of a rollout: each maps host name → the services it converges in that step; a
    step finishes on every host before the next starts.

    An instance joins a step once everything of earlier tiers on *other* hosts has converged
    and each of its dependencies has, or (same host) converges in the same step — compose
    orders those itself, so independent work on one host overlaps. One host: a single step.
    Several: data everywhere, then migrations once, then the app, then the edge. Peers (a
    quorum, healthy only together) converge in one step, on every host at once.
    """
    pending = list(instances(settings))
    done: set[tuple[str, str]] = set()
    steps: list[dict[str, tuple[str, ...]]] = []
    while pending:
        held: set[tuple[str, str]] = set()
        while True:
            chosen = _next_step(settings, pending, done, held)
            apart = {_key(i) for i in pending if _key(i) in chosen
                     and any(_key(p) not in chosen and _key(p) not in done for p in _peers(settings, i))}
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
