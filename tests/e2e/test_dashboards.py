"""No dead panel: every target of every panel of the built dashboards
(shipyard/components/grafana/dashboards.py), evaluated against the real Prometheus of the
environment under test, returns data.

Grafana need not run for this: the queries are the built dashboards' own, with the template
variables substituted as Grafana would (``$env``: the environment's name; ``$__rate_interval``:
four scrape intervals, Grafana's floor for it) and sent to Prometheus's range API over the last
minutes, the way a time-series panel asks; a panel draws something when one sample is a number
(NaN, as 0/0 gives, draws nothing). Each query is its own test, named
``<dashboard> / <panel> / <refId>``, so one dead panel does not hide another. The environment must
be rolled out already (`make up ENV=..`); nothing here deploys.
"""

from __future__ import annotations

import time

import pytest
import requests

from shipyard import topology
from shipyard.components.grafana import dashboards
from shipyard.inventory import load_environment

from .conftest import REPO

WINDOW_S = 300  # the last minutes a panel shows

QUERIES = [q for name in dashboards.DASHBOARDS for q in dashboards.panel_queries(dashboards.build(name))]
ANNOTATIONS = [q for name in dashboards.DASHBOARDS for q in dashboards.annotation_queries(dashboards.build(name))]


@pytest.fixture(scope="module")
def settings(env_name):
    settings = load_environment(REPO, env_name)
    if not settings.prometheus.enabled:
        pytest.fail(f"{env_name}: Prometheus must be enabled for this test (SHIPYARD.prometheus.enabled)")
    return settings


@pytest.fixture(scope="module")
def prometheus(settings) -> str:
    topo = topology.build(settings)
    bind, port = topo.binding(topo.instances_of("prometheus", "prometheus")[0])
    url = f"http://{bind}:{port}/api/v1"
    try:
        requests.get(f"{url}/status/buildinfo", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        pytest.fail(f"{settings.name}: Prometheus does not answer at {url} ({exc}): make up ENV={settings.name}")
    return url


@pytest.fixture(scope="module")
def variables(settings) -> dict[str, str]:
    scrape = settings.prometheus.scrape_interval_s
    return {"env": settings.name, "__rate_interval": f"{4 * scrape}s", "__interval": f"{scrape}s",
            "__range": f"{WINDOW_S}s"}


def _range(prometheus: str, expr: str, step_s: int) -> dict:
    end = time.time()
    answer = requests.get(f"{prometheus}/query_range", timeout=10,
                          params={"query": expr, "start": end - WINDOW_S, "end": end, "step": step_s})
    body = answer.json()
    assert answer.status_code == 200 and body.get("status") == "success", \
        f"Prometheus refused {expr!r}: {body.get('errorType')}: {body.get('error')}"
    return body["data"]


def test_the_env_variable_offers_the_environment(prometheus, settings):
    """The dashboards' one variable is label_values(up, env): the environment must be among them."""
    answer = requests.get(f"{prometheus}/label/env/values", params={"match[]": "up"}, timeout=5).json()
    assert settings.name in answer["data"], f"no target of {settings.name} is scraped (env values: {answer['data']})"


@pytest.mark.parametrize("query", QUERIES, ids=str)
def test_every_panel_returns_data(query, prometheus, settings, variables):
    expr = dashboards.with_variables(query.expr, variables)
    data = _range(prometheus, expr, settings.prometheus.scrape_interval_s)
    # NaN (0/0, a quantile of no requests) draws nothing: it is no data.
    drawn = sum(1 for series in data["result"] for _, value in series.get("values", []) if value.lower() != "nan")
    assert drawn, (f"dead panel: {query} — no data over the last {WINDOW_S // 60} minutes of {settings.name} "
                   f"for {expr}")


@pytest.mark.parametrize("query", ANNOTATIONS, ids=str)
def test_every_annotation_query_is_accepted(query, prometheus, settings, variables):
    """An annotation marks a release: none in the window is no fault, but Prometheus must accept the query."""
    _range(prometheus, dashboards.with_variables(query.expr, variables), 60)
