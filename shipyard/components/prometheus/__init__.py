"""Prometheus: scrapes every metrics endpoint the topology holds (targets.py), evaluates the
alerting rules of templates/prometheus/rules/ and sends alerts to Alertmanager.

One instance per environment, on the observability group's first host, its samples in a named
volume for ``prometheus.retention_days``. Published on loopback only (``ports.prometheus_http``;
nobody on another host consumes it). Every other host runs a Prometheus of its own
(``host-prometheus``: no rules, no alerting, ``HOST_RETENTION`` of samples) that scrapes that
host's instances, and which the environment's Prometheus federates (targets.py): a host's
metrics ports stay on its project network, one port per host is published on its private
address. Images: ``local`` builds Debian bookworm's prometheus 2.42 (promtool inside);
``official`` is prom/prometheus at the same version.

The rules are unit-tested (rules_tests/, `make test-unit`); each alert's runbook is RUNBOOKS.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from shipyard import yamltext
from shipyard.component import EVERY_HOST, Component, ConfigDir, Health, Image, Metrics, Port, Rotation, SecretFile, Service
from shipyard.components.consul import METRICS_TOKEN
from shipyard.components.prometheus.settings import PrometheusSettings
from shipyard.components.prometheus.targets import HOST_PROMETHEUS, federation_jobs, host_jobs

UID = 65534  # nobody, as in the official image
CONF = "/etc/prometheus"
PORT = 9090
VERSION = "2.42.0"
RUNBOOKS = "shipyard/components/prometheus/RUNBOOKS.md"
# What a host's own Prometheus keeps: the environment's Prometheus holds the history, and reads
# only the latest samples at each federation scrape (2 h: one head block, the shortest TSDB span).
HOST_RETENTION = "2h"


def _global(prom: PrometheusSettings, env: str) -> dict[str, Any]:
    return {"scrape_interval": f"{prom.scrape_interval_s}s", "evaluation_interval": f"{prom.evaluation_interval_s}s",
            # On every alert sent (and absent() alerts have no target labels to carry it).
            "external_labels": {"env": env}}


def config(ctx) -> dict[str, Any]:
    """prometheus.yml of the environment's Prometheus, as data: this host's instances, every
    other host's own Prometheus federated, the rules and Alertmanager."""
    prom: PrometheusSettings = ctx.section("prometheus")
    doc: dict[str, Any] = {
        "global": _global(prom, ctx.env),
        # Relative to this file: the same in the container and in compose/ (promtool check config).
        "rule_files": ["rules/*.yml"],
    }
    managers = [str(e) for e in ctx.endpoints("alertmanager", "alertmanager")]
    if managers:
        doc["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": managers}]}]}
    doc["scrape_configs"] = host_jobs(ctx, prom.scrape_interval_s) + federation_jobs(ctx)
    return doc


def host_config(ctx) -> dict[str, Any]:
    """prometheus.yml of a host's own Prometheus: its host's instances only."""
    prom: PrometheusSettings = ctx.section("prometheus")
    return {"global": _global(prom, ctx.env), "scrape_configs": host_jobs(ctx, prom.scrape_interval_s)}


def _yaml(doc: dict[str, Any]) -> str:
    return yamltext.dump(doc)


def template_context(ctx) -> dict[str, Any]:
    prom: PrometheusSettings = ctx.section("prometheus")
    apis = ctx.instances_of("taskplatform", "api")
    federated = bool(ctx.instances_of("prometheus", HOST_PROMETHEUS))
    here = {i.service.name for i in ctx.topology.instances_on(ctx.host) if i.component.name == "prometheus"}
    return {"env": ctx.env,
            "config_yaml": _yaml(config(ctx)) if "prometheus" in here else "",
            "host_config_yaml": _yaml(host_config(ctx)) if HOST_PROMETHEUS in here else "",
            "alerts": prom.alerts, "runbooks": RUNBOOKS,
            "objective": prom.availability_objective, "budget": f"{1 - prom.availability_objective:.6g}",
            "latency": {"objective": prom.latency_objective, "budget": f"{1 - prom.latency_objective:.6g}",
                        "threshold_ms": prom.latency_threshold_ms, "le": prom.latency_le()},
            "oldest_queued_max_s": prom.oldest_queued_task_max_s,
            "workers": bool(ctx.instances_of("taskplatform", "worker")), "api": bool(apis),
            # A sample older than three scrapes is not the target's present state (a federated
            # one reaches this Prometheus up to one more scrape later).
            "fresh_s": (4 if federated else 3) * prom.scrape_interval_s, **_datatier_context(ctx), **_logs_context(ctx)}


def _datatier_context(ctx) -> dict[str, Any]:
    """What rules/datatier.yml needs of the data tier's settings (its exporters' metrics)."""
    prom: PrometheusSettings = ctx.section("prometheus")
    postgres, redis = ctx.section("postgres"), ctx.section("redis")
    return {"postgres_exporters": bool(ctx.instances_of("postgres", "postgres-exporter")),
            "redis_sentinel_exporters": bool(ctx.instances_of("redis", "redis-sentinel-exporter")),
            "node_exporters": bool(ctx.instances_of("node", "node-exporter")),
            "consul_servers": bool(ctx.instances_of("consul", "consul")),
            "pg_max_lag_bytes": postgres.replica_max_lag_mb * 1024 * 1024,
            "pg_backup_interval_s": postgres.backup_interval_s,
            "disk_free_min": prom.host_disk_free_min,
            "memory_available_min": prom.host_memory_available_min}


def _logs_context(ctx) -> dict[str, Any]:
    """What rules/logs.yml needs: the hosts that run a shipper (each scraped on its host, and
    federated from the others) and the shipper's timings (elk's settings)."""
    prom: PrometheusSettings = ctx.section("prometheus")
    logs = ctx.section("logs")
    hosts = sorted({i.host.name for i in ctx.instances_of("elk", "logship")})
    return {"logship_hosts": hosts, "log_buffer_fill_max": prom.log_buffer_fill_max,
            # A record every stats_interval_s, scraped every scrape_interval_s: three of each missed is stale.
            "log_stats_fresh_s": 3 * (logs.stats_interval_s + prom.scrape_interval_s),
            # A failed check of the store at least every resumeIntervalMax, seen a record and a scrape later.
            "log_store_check_window_s": 2 * (logs.store_retry_max_s + logs.stats_interval_s
                                             + prom.scrape_interval_s)}


def compose_service(ctx, inst) -> dict[str, Any]:
    prom: PrometheusSettings = ctx.section("prometheus")
    if inst.service.name == HOST_PROMETHEUS:
        return {
            "command": [f"--config.file={CONF}/prometheus.yml", "--storage.tsdb.path=/prometheus",
                        f"--storage.tsdb.retention.time={HOST_RETENTION}", f"--web.listen-address=:{PORT}"],
            "volumes": ["host-prometheus-data:/prometheus"],
            "mem_limit": f"{prom.host_memory_limit_mb}m",
        }
    return {
        "command": [f"--config.file={CONF}/prometheus.yml", "--storage.tsdb.path=/prometheus",
                    f"--storage.tsdb.retention.time={prom.retention_days}d", f"--web.listen-address=:{PORT}"],
        "volumes": ["prometheus-data:/prometheus"],
        "mem_limit": f"{prom.memory_limit_mb}m",
    }


def _describe(settings, containers):
    from shipyard.components.prometheus.status import describe  # the docker SDK's containers: `make status` only

    return describe(settings, containers)


def _checks():
    from shipyard.components.prometheus import checks  # pytest and HTTP clients: loaded by `make verify` only

    return checks


COMPONENT = Component(
    name="prometheus",
    folder=Path(__file__).parent,
    settings={"prometheus": PrometheusSettings},
    # Where it sends alerts; what it scrapes (Consul's servers need a token: its secret). It reads
    # the data tier's settings for its rules.
    uses=("taskplatform", "alertmanager", "consul"),
    images=(Image("prometheus", official=f"prom/prometheus:v{VERSION}", local="shipyard/prometheus:2.42",
                  local_context="shipyard/components/prometheus/image"),),
    config_dirs=(ConfigDir("prometheus", CONF), ConfigDir(HOST_PROMETHEUS, CONF)),
    services=(
        Service("prometheus", "observability", "observability", "prometheus", UID, config_dir="prometheus",
                port=Port(PORT, "prometheus_http", PORT, "loopback port of Prometheus's UI and API"),
                health=Health(("wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{PORT}/-/ready"),
                              start_period_s=30),
                metrics=Metrics(PORT),
                # Bearer tokens of endpoints behind an ACL (Metrics.bearer_secret), read at each scrape.
                secrets=(SecretFile(METRICS_TOKEN, METRICS_TOKEN, rotation=Rotation()),),
                placement="once", scale=lambda s: 1 if s.prometheus.enabled else 0),
        # Every other host's: scrapes that host's instances for the one above to federate.
        Service(HOST_PROMETHEUS, "observability", EVERY_HOST, "prometheus", UID, config_dir=HOST_PROMETHEUS,
                port=Port(PORT, "host_prometheus_http", PORT, "private-address port of each host's own "
                          "Prometheus, federated by the environment's", publish="hosts"),
                health=Health(("wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{PORT}/-/ready"),
                              start_period_s=30),
                metrics=Metrics(PORT),
                secrets=(SecretFile(METRICS_TOKEN, METRICS_TOKEN, rotation=Rotation()),),
                # Reached by the Prometheus above only (federation), never handed to a consumer.
                serves_clients=False, uses=("consul",), not_beside="prometheus", scale=lambda s: 1 if s.prometheus.enabled else 0),
    ),
    compose_service=compose_service,
    template_context=template_context,
    checks=_checks,
    describe=_describe,
)
