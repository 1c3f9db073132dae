"""Decide what a rollout must do on one host, from desired and observed state. Pure.

A tier is up to date when every service in it has exactly its desired number of containers,
each created from the current compose config (compose's own config hash) and the current
image, running and healthy — or, for one-shot services, exited 0. Up-to-date tiers are not
touched, so a re-run with nothing changed recreates nothing and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shipyard.component import TIERS, Tier

COMPOSE_CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"


@dataclass(frozen=True)
class ObservedContainer:
    name: str
    service: str
    status: str  # running, exited, ...
    health: str | None  # healthy, unhealthy, starting, or None without a healthcheck
    exit_code: int
    config_hash: str
    image_id: str


@dataclass(frozen=True)
class DesiredService:
    name: str
    tier: Tier
    replicas: int
    config_hash: str
    image_id: str | None  # None when the image is not on the host yet
    one_shot: bool = False  # runs to completion (migrations): exited 0 is its healthy state


@dataclass
class TierPlan:
    tier: Tier
    services: list[str]
    reasons: list[str] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return not self.reasons


def _service_reasons(want: DesiredService, have: list[ObservedContainer]) -> list[str]:
    one_shot = want.one_shot
    if len(have) != want.replicas:
        return [f"{want.name}: {len(have)} container(s), want {want.replicas}"]
    reasons = []
    for c in have:
        if c.config_hash != want.config_hash:
            reasons.append(f"{c.name}: compose config changed")
        elif want.image_id is None or c.image_id != want.image_id:
            reasons.append(f"{c.name}: image changed")
        elif one_shot:
            if c.status != "exited" or c.exit_code != 0:
                reasons.append(f"{c.name}: one-shot is {c.status} (exit {c.exit_code})")
        elif c.status != "running":
            reasons.append(f"{c.name}: {c.status}")
        elif c.health not in (None, "healthy"):
            reasons.append(f"{c.name}: {c.health}")
    return reasons


def plan_host(desired: list[DesiredService], observed: list[ObservedContainer]) -> list[TierPlan]:
    """One TierPlan per tier present on the host, in rollout order (shipyard.component.TIERS)."""
    by_service: dict[str, list[ObservedContainer]] = {}
    for c in observed:
        by_service.setdefault(c.service, []).append(c)
    plans = []
    for tier in TIERS:
        wanted = [d for d in desired if d.tier == tier]
        if not wanted:
            continue
        plan = TierPlan(tier, [d.name for d in wanted])
        for want in wanted:
            plan.reasons += _service_reasons(want, by_service.get(want.name, []))
        plans.append(plan)
    return plans


# --- `make plan`: what a deploy would change, from the render and what the host runs -------------

_SHOWN = 60  # characters of a changed value shown (compose values hold no secrets)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."


def _differences(have, want, path: str = "") -> list[str]:
    """Key paths where two compose service documents differ, with old → new values."""
    if isinstance(have, dict) and isinstance(want, dict):
        out = []
        for key in sorted(set(have) | set(want), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in have:
                out.append(f"{sub} added ({_short(want[key])})")
            elif key not in want:
                out.append(f"{sub} removed")
            else:
                out += _differences(have[key], want[key], sub)
        return out
    if have != want:
        return [f"{path}: {_short(have)} -> {_short(want)}"]
    return []


def service_changes(deployed: dict | None, rendered: dict) -> dict[str, list[str]]:
    """service → why a deploy would recreate, create or remove it (empty: unchanged), from the
    compose document deployed on the host and the one rendered now."""
    have = (deployed or {}).get("services", {})
    want = rendered.get("services", {})
    changes: dict[str, list[str]] = {}
    for name, doc in want.items():
        if name not in have:
            changes[name] = ["new service"]
            continue
        reasons = _differences(have[name], doc)
        config = [r for r in reasons if r.startswith("labels.org.shipyard.config-hash")]
        if config:
            reasons = [r for r in reasons if r not in config] + ["its config files changed"]
        changes[name] = reasons
    for name in have:
        if name not in want:
            changes[name] = ["removed from the render (its container goes)"]
    return changes


def file_changes(deployed: dict[str, str], rendered: dict[str, str]) -> list[str]:
    """Project files (path → sha256) a deploy would write or delete."""
    out = [f"{path}: new" for path in sorted(set(rendered) - set(deployed))]
    out += [f"{path}: changed" for path in sorted(set(rendered) & set(deployed)) if rendered[path] != deployed[path]]
    out += [f"{path}: removed" for path in sorted(set(deployed) - set(rendered))]
    return out


def healthy_services(observed: list[ObservedContainer]) -> set[str]:
    """Services every container of which runs and passes its health check (or has none)."""
    by_service: dict[str, list[ObservedContainer]] = {}
    for c in observed:
        by_service.setdefault(c.service, []).append(c)
    return {service for service, containers in by_service.items()
            if all(c.status == "running" and c.health in (None, "healthy") for c in containers)}


def to_restore(healthy_before: set[str], failing_after: list[ObservedContainer]) -> list[str]:
    """What a failed deploy took down: services that were healthy before it and are not now.
    They go back to the last configuration that deployed well (shipyard.apply.converge)."""
    return sorted(healthy_before & {c.service for c in failing_after})


def env_changes(deployed_env: str | None, wanted_env: str, variables: dict[str, str]) -> dict[str, list[str]]:
    """Instances whose secrets-at-start fingerprint (the project's .env) would change: a deploy
    recreates them. ``variables``: instance → its .env variable (render.compose.secrets_variable)."""
    def parse(text: str | None) -> dict[str, str]:
        return dict(line.split("=", 1) for line in (text or "").splitlines() if "=" in line)

    have, want = parse(deployed_env), parse(wanted_env)
    return {inst: ["a secret it reads at start changed"] for inst, var in variables.items()
            if var in want and have.get(var) != want[var]}


def parse_config_hashes(output: str) -> dict[str, str]:
    """`docker compose config --hash '*'` → service → hash."""
    return dict(line.split(None, 1) for line in output.splitlines() if len(line.split()) == 2)


def drifted(containers: dict[str, list[tuple[str, str]]], deployed: dict[str, str]) -> dict[str, list[str]]:
    """Containers not made from the deployed definition (recreated or changed outside the deploy):
    ``containers``: service → [(container name, its config-hash label)]; ``deployed``: service →
    the hash compose computes from the project on the host."""
    out: dict[str, list[str]] = {}
    for service, found in containers.items():
        want = deployed.get(service)
        for name, have in found:
            if want and have != want:
                out.setdefault(service, []).append(f"{name}: not made from the deployed definition "
                                                   "(changed outside the deploy)")
    return out
