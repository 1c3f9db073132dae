"""Prometheus: every instance with metrics the topology holds answers (each running instance,
by service and colour, on every host: its own scraped, the others' federated from each host's
own Prometheus), the rules are loaded and evaluate with no error, Alertmanager is among its
alerting endpoints, and nothing of it is published beyond loopback. A host's own Prometheus:
every target of its host up, published on its host's private address only."""

import time

import pytest
import requests

from shipyard.components.prometheus import PORT
from shipyard.components.prometheus.targets import HOST_PROMETHEUS

WAIT_S = 120  # a fresh Prometheus: discovery, a first scrape and a first evaluation


@pytest.fixture(scope="module")
def prometheus(target):
    if not target.runs_service("prometheus"):
        pytest.skip("no Prometheus on this host")
    return f"http://{target.reach('prometheus')}"


def _get(base: str, path: str) -> dict:
    answer = requests.get(f"{base}{path}", timeout=5)
    answer.raise_for_status()
    return answer.json()["data"]


def _expected(target) -> set[tuple[str, str, str]]:
    """(host, service, colour) of every running instance with metrics, on every host (of a
    coloured service: the colours the release state runs)."""
    from shipyard import topology

    running = target.release.colours_to_run()
    return {(i.host.name, i.service.name, i.colour or "") for i in topology.build(target.settings).instances
            if i.service.metrics and not i.service.one_shot and (i.colour is None or i.colour in running)}


def test_every_target_is_up(target, prometheus):
    """What Prometheus holds (``up``: scraped here, or federated with another host's series)."""
    expected, running = _expected(target), target.release.colours_to_run()
    deadline = time.monotonic() + WAIT_S
    while True:
        series = _get(prometheus, "/api/v1/query?query=up")["result"]
        seen = {(s["metric"]["host"], s["metric"]["service"], s["metric"].get("colour", "")) for s in series}
        down = [f"{s['metric']['job']} {s['metric']['instance']} on {s['metric']['host']}" for s in series
                if s["value"][1] != "1" and s["metric"].get("colour", "") in ("", *running)]
        if (expected <= seen and not down) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert expected <= seen, f"not scraped: {sorted(expected - seen)}"
    assert not down, "targets not up:\n" + "\n".join(down)
    for s in series:  # the labels alerts and dashboards select on
        assert {"env", "host", "component", "service", "job"} <= set(s["metric"]), s["metric"]
        assert s["metric"]["env"] == target.settings.name


def test_rules_are_loaded_and_evaluate_without_error(target, prometheus):
    deadline = time.monotonic() + WAIT_S
    while True:
        rules = [r for g in _get(prometheus, "/api/v1/rules")["groups"] for r in g["rules"]]
        if (rules and all(r["health"] != "unknown" for r in rules)) or time.monotonic() > deadline:
            break
        time.sleep(1)
    failing = [f"{r['name']}: {r['health']} {r.get('lastError', '')}" for r in rules if r["health"] != "ok"]
    assert rules and not failing, "rules not evaluating:\n" + "\n".join(failing)
    assert {"TargetDown", "HostDown"} <= {r["name"] for r in rules}


def test_alerts_go_to_the_environments_alertmanager(target, prometheus):
    if not target.runs("alertmanager"):
        pytest.skip("no Alertmanager in this environment")
    deadline = time.monotonic() + WAIT_S
    while not _get(prometheus, "/api/v1/alertmanagers")["activeAlertmanagers"] and time.monotonic() < deadline:
        time.sleep(1)
    assert [a["url"] for a in _get(prometheus, "/api/v1/alertmanagers")["activeAlertmanagers"]]


def test_published_on_loopback_only(target, prometheus):
    container = target.container_of("prometheus")
    bindings = [b for ports in (container["NetworkSettings"]["Ports"] or {}).values() for b in (ports or [])]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), bindings
    from shipyard import topology

    bind, port = topology.build(target.settings).published(target.rendered.host, "prometheus")
    assert [f"{b['HostIp']}:{b['HostPort']}" for b in bindings] == [f"{bind}:{port}"]
    assert container["Config"]["ExposedPorts"].keys() == {f"{PORT}/tcp"}


def _exporters(target) -> list:
    """Every exporter instance on this host (services named ``*-exporter``, with metrics)."""
    from shipyard import topology

    return [i for i in topology.build(target.settings).instances_on(target.rendered.host)
            if i.service.metrics and i.service.name.endswith("-exporter")]


def test_every_exporter_target_is_up_and_none_is_published(target, prometheus):
    exporters = _exporters(target)
    assert exporters, "no exporter on this host"
    deadline = time.monotonic() + WAIT_S
    while True:
        active = _get(prometheus, "/api/v1/targets?state=active")["activeTargets"]
        by_job = {}
        for t in active:
            by_job.setdefault(t["labels"]["job"], []).append(t["health"])
        missing = sorted({i.service.name for i in exporters} - {j for j, h in by_job.items() if h and all(x == "up" for x in h)})
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, f"exporters not scraped or not up: {missing}"
    for inst in exporters:  # reachable on the project network only: no port bound on the host
        ports = target.container_of(inst.name)["NetworkSettings"]["Ports"] or {}
        assert not [b for bindings in ports.values() for b in (bindings or [])], f"{inst.name} publishes {ports}"
    # Each exporter reaches what it watches (their own "up" metrics), not only answers its scrape.
    for metric in ("pg_up", "redis_up", "nginx_up"):
        answer = requests.get(f"{prometheus}/api/v1/query", params={"query": f"{metric} == 0"}, timeout=5).json()
        assert answer["data"]["result"] == [], f"{metric} == 0: {answer['data']['result']}"


@pytest.fixture(scope="module")
def host_prometheus(target):
    if not target.runs_service(HOST_PROMETHEUS):
        pytest.skip("no Prometheus of this host's own here")
    return f"http://{target.reach(HOST_PROMETHEUS)}"


def test_a_hosts_own_prometheus_scrapes_every_instance_of_its_host(target, host_prometheus):
    from shipyard import topology

    running = target.release.colours_to_run()
    expected = {i.name for i in topology.build(target.settings).instances_on(target.rendered.host)
                if i.service.metrics and not i.service.one_shot and (i.colour is None or i.colour in running)}
    deadline = time.monotonic() + WAIT_S
    while True:
        active = _get(host_prometheus, "/api/v1/targets?state=active")["activeTargets"]
        up = {t["scrapePool"].split("/", 1)[1] for t in active if t["health"] == "up"}
        if expected <= up or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert expected <= up, f"not up on {target.rendered.host.name}'s own Prometheus: {sorted(expected - up)}"
    # Nothing of another host, no rules, no alerting: that is the environment's Prometheus's.
    assert {t["labels"]["host"] for t in active} == {target.rendered.host.name}
    assert not _get(host_prometheus, "/api/v1/rules")["groups"]


def test_a_hosts_own_prometheus_is_published_on_its_private_address_only(target, host_prometheus):
    from shipyard import topology

    container = target.container_of(HOST_PROMETHEUS)
    bindings = [b for ports in (container["NetworkSettings"]["Ports"] or {}).values() for b in (ports or [])]
    bind, port = topology.build(target.settings).published(target.rendered.host, HOST_PROMETHEUS)
    assert bind == target.rendered.host.address
    assert [f"{b['HostIp']}:{b['HostPort']}" for b in bindings] == [f"{bind}:{port}"]
