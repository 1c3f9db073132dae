"""Prometheus's scrape jobs from the topology: every instance of every service that declares
``metrics`` (shipyard.component.Metrics), each with the labels env, host, component, service
and colour (coloured services), its ``job`` being the service's name; an endpoint behind an ACL
gets its bearer token from a secret file of Prometheus (``Metrics.bearer_secret``).

An instance on Prometheus's own host is found by Docker's DNS under its compose name
(``dns_sd_configs``), re-read every scrape interval: that name resolves to every replica of a
scaled service (``deploy.replicas``) and to nothing while the container is absent (the idle
colour, a stopped worker), so what is scraped follows what runs, with no re-render.

An instance on another host is scraped at the address and port the topology publishes for it
there, which exists only where the metrics are served on the service's client port (the API).
The others are listed as not scraped (``unreachable``): multi-host discovery is a later slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScrapePlan:
    jobs: list[dict[str, Any]]
    unreachable: list[str]  # "worker-blue on app-2 (metrics port 9101 is not published to other hosts)"


def labels_of(ctx, inst) -> dict[str, str]:
    labels = {"env": ctx.env, "host": inst.host.name, "component": inst.component.name, "service": inst.service.name}
    if inst.colour:
        labels["colour"] = inst.colour
    return labels


def _relabel(job: str, labels: dict[str, str]) -> list[dict[str, str]]:
    return [{"target_label": "job", "replacement": job},
            *({"target_label": k, "replacement": v} for k, v in labels.items())]


def scrape_plan(ctx, interval_s: int) -> ScrapePlan:
    jobs, unreachable = [], []
    for inst in ctx.topology.instances:
        metrics = inst.service.metrics
        if metrics is None or inst.service.one_shot:
            continue
        labels = labels_of(ctx, inst)
        job: dict[str, Any] = {"job_name": f"{inst.host.name}/{inst.name}", "metrics_path": metrics.path}
        if metrics.params:
            job["params"] = {k: [v] for k, v in metrics.params}
        if metrics.bearer_secret:  # read at each scrape: a rotated token needs no restart
            job["authorization"] = {"type": "Bearer", "credentials_file": f"/run/secrets/{metrics.bearer_secret}"}
        if inst.host.name == ctx.host.name:
            job["dns_sd_configs"] = [{"names": [inst.name], "type": "A", "port": metrics.port,
                                      "refresh_interval": f"{interval_s}s"}]
        elif inst.service.port is not None and inst.service.port.container == metrics.port:
            job["static_configs"] = [{"targets": [str(ctx.address(inst))]}]
        else:
            unreachable.append(f"{inst.name} on {inst.host.name} (metrics port {metrics.port} is not published "
                               "to other hosts)")
            continue
        job["relabel_configs"] = _relabel(inst.service.name, labels)
        jobs.append(job)
    return ScrapePlan(jobs, unreachable)
