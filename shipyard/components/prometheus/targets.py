"""Prometheus's scrape jobs from the topology: every instance of every service that declares
``metrics`` (shipyard.component.Metrics), each with the labels env, host, component, service
and colour (coloured services), its ``job`` being the service's name; an endpoint behind an ACL
gets its bearer token from a secret file of Prometheus (``Metrics.bearer_secret``).

Each Prometheus scrapes the instances of its own host only, found by Docker's DNS under their
compose names (``dns_sd_configs``), re-read every scrape interval: that name resolves to every
replica of a scaled service (``deploy.replicas``) and to nothing while the container is absent
(the idle colour, a stopped worker), so what is scraped follows what runs, with no re-render.
No metrics port is published for this.

Every host but the environment's Prometheus's own runs a Prometheus of its own (the service
``host-prometheus``, with these jobs for its host); the environment's Prometheus federates each
of them (``/federate``, every series that has a job, their labels and timestamps kept), at the
one port each publishes on its host's private address. When a host's Prometheus stops
answering, everything federated from it goes stale at once and that job's own ``up`` turns 0:
the host's targets are missed as a whole (TargetDown, HostDown), not kept at their last values.
"""

from __future__ import annotations

from typing import Any

HOST_PROMETHEUS = "host-prometheus"


def labels_of(ctx, inst) -> dict[str, str]:
    labels = {"env": ctx.env, "host": inst.host.name, "component": inst.component.name, "service": inst.service.name}
    if inst.colour:
        labels["colour"] = inst.colour
    return labels


def _relabel(job: str, labels: dict[str, str]) -> list[dict[str, str]]:
    return [{"target_label": "job", "replacement": job},
            *({"target_label": k, "replacement": v} for k, v in labels.items())]


def host_jobs(ctx, interval_s: int) -> list[dict[str, Any]]:
    """A scrape job for each instance with metrics on the rendered host (by its compose name)."""
    jobs = []
    for inst in ctx.topology.instances_on(ctx.host):
        metrics = inst.service.metrics
        if metrics is None or inst.service.one_shot:
            continue
        job: dict[str, Any] = {"job_name": f"{inst.host.name}/{inst.name}", "metrics_path": metrics.path}
        if metrics.params:
            job["params"] = {k: [v] for k, v in metrics.params}
        if metrics.bearer_secret:  # read at each scrape: a rotated token needs no restart
            job["authorization"] = {"type": "Bearer", "credentials_file": f"/run/secrets/{metrics.bearer_secret}"}
        job["dns_sd_configs"] = [{"names": [inst.name], "type": "A", "port": metrics.port,
                                  "refresh_interval": f"{interval_s}s"}]
        job["relabel_configs"] = _relabel(inst.service.name, labels_of(ctx, inst))
        jobs.append(job)
    return jobs


def federation_jobs(ctx) -> list[dict[str, Any]]:
    """A ``/federate`` job for each other host's own Prometheus, at its published address."""
    jobs = []
    for inst in ctx.instances_of("prometheus", HOST_PROMETHEUS):
        bind, port = ctx.topology.binding(inst)
        jobs.append({"job_name": f"{inst.host.name}/{inst.name}/federate", "metrics_path": "/federate",
                     # The series keep the labels (job, host, service...) and timestamps of the
                     # host's Prometheus; this job's own up/scrape_* get the labels below.
                     "honor_labels": True, "params": {"match[]": ['{job!=""}']},
                     "static_configs": [{"targets": [f"{bind}:{port}"]}],
                     "relabel_configs": _relabel(HOST_PROMETHEUS, labels_of(ctx, inst))})
    return jobs
