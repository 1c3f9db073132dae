"""The dashboards, as code: built with Grafana's own ``grafana-foundation-sdk`` (PyPI, pinned
exactly in requirements.txt: its versions carry an epoch) and rendered to JSON at `make render`
(templates/grafana/dashboards/shipyard/*.json.j2), so compose/ holds what Grafana loads and the
unit tests see a stale file. Pure: no I/O.

Every query selects ``env="$env"`` (the one template variable; every scrape target carries the
``env``, ``host``, ``component``, ``service``, ``colour`` and ``job`` labels) and uses Grafana's
``$__rate_interval`` in range selectors. ``tests/e2e/test_dashboards.py`` evaluates every
target of every panel (``panel_queries``) against the Prometheus of a running environment.

Metric names: the task platform's own (services/), prometheus-postgres-exporter's built-in ones
(``pg_up``, ``pg_stat_replication_*``, ``pg_replication_slots_*``) and redis_exporter's
(``redis_up``, ``redis_instance_info``, ``redis_connected_clients``, ``redis_sentinel_master_*``),
as Debian's packages (0.11, 1.45) export them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

# The provisioned Prometheus datasource (provisioning/datasources/prometheus.yaml): dashboards
# refer to it by this uid, so they never depend on a datasource picked in the UI.
DATASOURCE_UID = "prometheus"
DATASOURCE = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
FOLDER = "Shipyard"
ENV = 'env="$env"'
RATE = "$__rate_interval"


def _query(expr: str, legend: str = "__auto", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def _panel(kind, title: str, unit: str, queries: list[tuple[str, str]], width: int, description: str):
    panel = kind().title(title).description(description).unit(unit).datasource(DATASOURCE).span(width).height(8)
    for n, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + n)))
    return panel


def _graph(title: str, unit: str, queries: list[tuple[str, str]], width: int = 12, description: str = ""):
    return _panel(timeseries.Panel, title, unit, queries, width, description)


def _stat(title: str, unit: str, queries: list[tuple[str, str]], width: int = 6, description: str = ""):
    return _panel(stat.Panel, title, unit, queries, width, description)


def _rate(metric: str, by: str, selector: str = ENV) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RATE}]))"


def _dashboard(uid: str, title: str, tags: list[str]):
    env = (dashboard.QueryVariable("env").label("environment").datasource(DATASOURCE)
           .query("label_values(up, env)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))
    return (dashboard.Dashboard(title).uid(uid).tags(["shipyard", *tags]).editable().refresh("30s")
            .time("now-1h", "now").timezone("utc").with_variable(env))


QUEUE_STATE = "The queue's own state, reported alike by every process that exports it: max, not sum."


def platform_overview():
    errors = _rate("http_requests_total", "route", f'{ENV}, status=~"5.."')
    answers = _rate("http_requests_total", "route")
    latency = "histogram_quantile({q}, sum by (route, le) (rate(http_request_duration_seconds_bucket{{{env}}}[{r}])))"
    tasks = [(_rate(f"tasks_{what}_total", "kind"), f"{what} {{{{kind}}}}")
             for what in ("created", "completed", "failed", "dead")]
    pool = [(f'sum by (service) (db_pool_connections{{{ENV}, state="in_use"}})', "in use {{service}}"),
            (f'sum by (service) (db_pool_connections{{{ENV}, state="idle"}})', "idle {{service}}"),
            (f"sum by (service) (db_pool_waiting{{{ENV}}})", "waiting {{service}}"),
            (f"sum by (service) (db_pool_max{{{ENV}}})", "max {{service}}")]
    return (_dashboard("shipyard-platform", "Shipyard / Platform overview", ["platform"])
            .with_row(dashboard.Row("API"))
            .with_panel(_graph("Requests by route", "reqps", [(answers, "{{route}}")]))
            # No 5xx at all is a ratio of 0, not "No data": the numerator falls back to 0 × answers.
            .with_panel(_graph("5xx ratio by route", "percentunit",
                               [(f"({errors} or {answers} * 0) / {answers}", "{{route}}")]))
            .with_panel(_graph("Latency by route (p50, p95, p99)", "s",
                               [(latency.format(q=q, env=ENV, r=RATE), f"p{round(q * 100)} {{{{route}}}}")
                                for q in (0.5, 0.95, 0.99)], width=24))
            .with_row(dashboard.Row("Tasks"))
            .with_panel(_graph("Tasks by kind: created, completed, failed, dead", "ops", tasks))
            .with_panel(_graph("Worker slots: busy and total", "short",
                               [(f"sum(worker_tasks_running{{{ENV}}})", "busy"),
                                (f"sum(worker_slots{{{ENV}}})", "total")]))
            .with_panel(_graph("Queued tasks", "short", [(f"max(tasks_queued{{{ENV}}})", "queued")], width=6,
                               description=QUEUE_STATE))
            .with_panel(_graph("Oldest queued task", "s",
                               [(f"max(tasks_oldest_queued_age_seconds{{{ENV}}})", "age")], width=6,
                               description=QUEUE_STATE))
            .with_panel(_graph("Database pool", "short", pool)))


def data_tier():
    """Only what the exporters compute themselves: Debian's prometheus-postgres-exporter 0.11 has
    no replay lag in seconds built in (``pg_replication_lag`` is an example query, and newer
    exporters call it ``pg_replication_lag_seconds``), so lag is the primary's view in bytes."""
    lag = f"max by (application_name) (pg_stat_replication_pg_wal_lsn_diff{{{ENV}}})"
    return (_dashboard("shipyard-data", "Shipyard / Data tier", ["postgres", "redis"])
            .with_row(dashboard.Row("PostgreSQL"))
            .with_panel(_stat("PostgreSQL nodes up", "short", [(f"sum(pg_up{{{ENV}}})", "up")]))
            .with_panel(_stat("Replicas streaming (seen from the primary)", "short",
                              [(f'count(pg_stat_replication_pg_wal_lsn_diff{{{ENV}, state="streaming"}})',
                                "streaming")]))
            .with_panel(_graph("Replication lag: bytes each client is behind the primary", "bytes",
                               [(lag, "{{application_name}}")]))
            .with_panel(_stat("Replication slots active", "short",
                              [(f"sum(max by (slot_name) (pg_replication_slots_active{{{ENV}}}))", "active")],
                              width=12))
            .with_panel(_graph("WAL each slot retains", "bytes",
                               [(f"max by (slot_name) (pg_replication_slots_pg_wal_lsn_diff{{{ENV}}})",
                                 "{{slot_name}}")]))
            .with_row(dashboard.Row("Redis"))
            .with_panel(_stat("Redis nodes by role", "short",
                              [(f'count by (role) (redis_instance_info{{{ENV}, role!=""}})', "{{role}}")]))
            .with_panel(_stat("Redis nodes and Sentinels up", "short", [(f"sum(redis_up{{{ENV}}})", "up")]))
            .with_panel(_graph("Redis clients", "short",
                               [(f"sum by (service, instance) (redis_connected_clients{{{ENV}}})",
                                 "{{service}} {{instance}}")]))
            .with_panel(_graph("Sentinels: replicas and sentinels each sees", "short",
                               [(f"max by (master_name) (redis_sentinel_master_slaves{{{ENV}}})",
                                 "replicas of {{master_name}}"),
                                (f"max by (master_name) (redis_sentinel_master_sentinels{{{ENV}}})",
                                 "sentinels of {{master_name}}")])))


# A version that was not there a minute before: a release (or a rollback) reached a process.
RELEASE_ANNOTATION = (f"count by (version) (release_info{{{ENV}}} == 1) "
                      f"unless count by (version) (release_info{{{ENV}}} offset 1m == 1)")


def releases():
    annotation = (dashboard.AnnotationQuery().name("Releases").datasource(DATASOURCE).enable(True)
                  .icon_color("blue").expr(RELEASE_ANNOTATION))
    return (_dashboard("shipyard-releases", "Shipyard / Releases", ["releases"])
            .annotation(annotation)
            .with_panel(_stat("Running version by colour", "short",
                              [(f"count by (colour, version) (release_info{{{ENV}}} == 1)", "{{colour}} {{version}}")],
                              width=12, description="Scrape targets (API, workers) per colour and version "
                                                    "(release_info)."))
            .with_panel(_stat("Colours running", "short",
                              [(f'count by (colour) (up{{{ENV}, colour=~"blue|green"}} == 1)', "{{colour}}")],
                              width=12, description="Scrape targets up per colour: the live one, and the previous "
                                                    "while it is kept warm."))
            .with_panel(_graph("Targets per version", "short",
                               [(f"count by (version) (release_info{{{ENV}}} == 1)", "{{version}}")], width=24)))


def runtime_config():
    return (_dashboard("shipyard-runtime-config", "Shipyard / Runtime config", ["runtime-config"])
            .with_panel(_stat("Config versions applied", "short",
                              [(f"count(count by (version) (config_version_info{{{ENV}}}))", "versions")],
                              description="More than one for long: some process is on an old config "
                                          "(RuntimeConfigMismatch)."))
            .with_panel(_graph("Processes per config version", "short",
                               [(f"count by (version, hash) (config_version_info{{{ENV}}})",
                                 "v{{version}} {{hash}}")], width=18))
            .with_panel(_graph("Config rejections", "short",
                               [(f"sum by (service) (increase(config_rejections_total{{{ENV}}}[{RATE}]))",
                                 "{{service}}")], width=24)))


# file name (without .json) → builder. The file names are the templates' names.
DASHBOARDS: dict[str, Callable[[], Any]] = {
    "platform-overview": platform_overview,
    "data-tier": data_tier,
    "releases": releases,
    "runtime-config": runtime_config,
}


# Fields of Grafana's Prometheus annotation query that the SDK's AnnotationQuery does not model:
# one mark per new version, titled with it, at most one a minute.
ANNOTATION_FIELDS = {"Releases": {"titleFormat": "release {{version}}", "tagKeys": "version", "step": "1m",
                                  "useValueForTime": False}}


def build(name: str) -> dict[str, Any]:
    """The dashboard's JSON model as plain data (what Grafana's file provider loads)."""
    model = json.loads(json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder))
    for annotation in (model.get("annotations") or {}).get("list", []):
        annotation.update(ANNOTATION_FIELDS.get(annotation.get("name"), {}))
    return model


def to_json(model: dict[str, Any]) -> str:
    """Deterministic text: the same dashboards give the same bytes."""
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def built() -> dict[str, str]:
    """file name → JSON text of every dashboard."""
    return {name: to_json(build(name)) for name in DASHBOARDS}


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])  # a collapsed row holds its panels


def panel_queries(model: dict[str, Any]) -> list[PanelQuery]:
    """Every target expr of every panel of a dashboard model."""
    return [PanelQuery(model["title"], panel.get("title", ""), target.get("refId", ""), target["expr"])
            for panel in _panels(model.get("panels") or []) for target in panel.get("targets") or []
            if target.get("expr")]


def annotation_queries(model: dict[str, Any]) -> list[PanelQuery]:
    return [PanelQuery(model["title"], f"annotation {a.get('name')}", "", a["expr"])
            for a in (model.get("annotations") or {}).get("list", []) if a.get("expr")]


_VARIABLE = re.compile(r"\$\{(\w+)\}|\[\[(\w+)\]\]|\$(\w+)")


def with_variables(expr: str, values: dict[str, str]) -> str:
    """``expr`` as Grafana sends it to Prometheus, with ``values`` for its template variables
    (``$env``, ``${env}``, ``[[env]]``, ``$__rate_interval``…). A variable without a value is an
    error naming it: a query is never evaluated half-substituted."""
    def value(match: re.Match) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"no value for the template variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(value, expr)
