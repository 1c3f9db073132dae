"""Grafana (``official`` image source only; skipped where it does not run): healthy, the
provisioned Prometheus datasource answers, every dashboard built by dashboards.py is loaded, the
admin password is the secret's and nobody gets in without it, and nothing of it is published
beyond loopback.

Not run on the machines Shipyard is developed on: they deploy the ``local`` source only.
"""

import time

import pytest
import requests

from shipyard.components.grafana import PORT, SECRET, dashboards

WAIT_S = 120  # a first start: database migrations, then provisioning


@pytest.fixture(scope="module")
def grafana(target):
    if not target.runs("grafana"):
        pytest.skip("no Grafana on this host (it runs under the official image source only)")
    return f"http://{target.reach('grafana')}"


@pytest.fixture(scope="module")
def grafana_admin(target, grafana):
    password = target.host.file(f"{target.project_dir}/secrets/grafana/{SECRET}").content_string.strip()
    return (target.settings.grafana.admin_user, password)


def _wait_healthy(grafana: str) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            answer = requests.get(f"{grafana}/api/health", timeout=5)
            if answer.ok and answer.json().get("database") == "ok":
                return answer.json()
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"Grafana at {grafana} not healthy after {WAIT_S} s"
        time.sleep(1)


def test_healthy(grafana):
    assert _wait_healthy(grafana)["database"] == "ok"


def test_the_datasource_is_the_environments_prometheus_and_answers(grafana, grafana_admin):
    _wait_healthy(grafana)
    uid = dashboards.DATASOURCE_UID
    source = requests.get(f"{grafana}/api/datasources/uid/{uid}", auth=grafana_admin, timeout=5)
    assert source.ok, f"datasource {uid} not provisioned: {source.status_code} {source.text[:200]}"
    assert source.json()["type"] == "prometheus"
    health = requests.get(f"{grafana}/api/datasources/uid/{uid}/health", auth=grafana_admin, timeout=10)
    assert health.ok and health.json().get("status") == "OK", health.text[:300]


def test_every_built_dashboard_is_loaded(grafana, grafana_admin):
    _wait_healthy(grafana)
    wanted = {dashboards.build(name)["uid"] for name in dashboards.DASHBOARDS}
    deadline = time.monotonic() + WAIT_S
    while True:
        found = requests.get(f"{grafana}/api/search", params={"type": "dash-db", "tag": "shipyard"},
                             auth=grafana_admin, timeout=5).json()
        loaded = {d["uid"] for d in found}
        if wanted <= loaded or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert wanted <= loaded, f"not loaded: {sorted(wanted - loaded)}"


def test_nobody_gets_in_without_the_password(grafana, grafana_admin):
    _wait_healthy(grafana)
    uid = dashboards.build("platform-overview")["uid"]
    assert requests.get(f"{grafana}/api/dashboards/uid/{uid}", timeout=5).status_code == 401
    assert requests.get(f"{grafana}/api/dashboards/uid/{uid}", auth=(grafana_admin[0], "admin"), timeout=5).status_code == 401


def test_published_on_loopback_only(target, grafana):
    container = target.container_of("grafana")
    bindings = [b for ports in (container["NetworkSettings"]["Ports"] or {}).values() for b in (ports or [])]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings
    assert [f"{b['HostIp']}:{b['HostPort']}" for b in bindings] == [grafana.removeprefix("http://")]
    assert f"{PORT}/tcp" in container["Config"]["ExposedPorts"]
