"""Prometheus: every target the topology gives it is up (each running instance with metrics,
by service and colour), the rules are loaded and evaluate with no error, Alertmanager is
among its alerting endpoints, and nothing of it is published beyond loopback."""

import time

import pytest
import requests

from shipyard.components.prometheus import PORT

WAIT_S = 120  # a fresh Prometheus: discovery, a first scrape and a first evaluation


@pytest.fixture(scope="module")
def prometheus(target):
    if not target.runs("prometheus"):
        pytest.skip("no Prometheus on this host")
    return f"http://{target.reach('prometheus')}"


def _get(base: str, path: str) -> dict:
    answer = requests.get(f"{base}{path}", timeout=5)
    answer.raise_for_status()
    return answer.json()["data"]


def _expected(target) -> set[tuple[str, str, str]]:
    """(host, service, colour) of every running instance with metrics (of a coloured service:
    the colours the release state runs)."""
    from shipyard import topology

    running = target.release.colours_to_run()
    here = target.rendered.host.name

    def scraped(i) -> bool:
        # What the rendered config scrapes (targets.py): this host's own, and another host's only
        # where its metrics are served on its published client port; the rest it lists as not
        # scraped (multi-host discovery is a later slice).
        return i.host.name == here or (i.service.port is not None and i.service.port.container == i.service.metrics.port)

    return {(i.host.name, i.service.name, i.colour or "") for i in topology.build(target.settings).instances
            if i.service.metrics and not i.service.one_shot and (i.colour is None or i.colour in running) and scraped(i)}


def test_every_target_is_up(target, prometheus):
    expected, running = _expected(target), target.release.colours_to_run()
    deadline = time.monotonic() + WAIT_S
    while True:
        active = _get(prometheus, "/api/v1/targets?state=active")["activeTargets"]
        seen = {(t["labels"]["host"], t["labels"]["service"], t["labels"].get("colour", "")) for t in active}
        # Another host's API is listed by address in both colours (targets.py): the idle one's is
        # down between releases, which is what it should be.
        down = [f"{t['labels']['job']} {t['labels']['instance']}: {t['health']} {t['lastError']}"
                for t in active if t["health"] != "up" and t["labels"].get("colour", "") in ("", *running)]
        if (expected <= seen and not down) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert expected <= seen, f"not discovered: {sorted(expected - seen)}"
    assert not down, "targets not up:\n" + "\n".join(down)
    for t in active:  # the labels alerts and dashboards select on
        assert {"env", "host", "component", "service", "job"} <= set(t["labels"]), t["labels"]
        assert t["labels"]["env"] == target.settings.name


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
