"""Alertmanager: ready, running the rendered config (its receivers and inhibitions), and
published on loopback only."""

import time

import pytest
import requests
import yaml

WAIT_S = 60


@pytest.fixture(scope="module")
def alertmanager(target):
    if not target.runs("alertmanager"):
        pytest.skip("no Alertmanager on this host")
    return f"http://{target.reach('alertmanager')}"


def test_ready(alertmanager):
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            status = requests.get(f"{alertmanager}/-/ready", timeout=5).status_code
        except requests.RequestException as exc:
            status = type(exc).__name__
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status == 200


def test_runs_the_rendered_config(target, alertmanager):
    status = requests.get(f"{alertmanager}/api/v2/status", timeout=5).json()
    running = yaml.safe_load(status["config"]["original"])
    rendered = yaml.safe_load(target.rendered.files["alertmanager/alertmanager.yml"])
    assert [r["name"] for r in running["receivers"]] == [r["name"] for r in rendered["receivers"]]
    assert len(running["inhibit_rules"]) == len(rendered["inhibit_rules"])
    assert running["route"]["group_by"] == rendered["route"]["group_by"]
    # One instance: clustering is off, so it opens no gossip port.
    assert status["cluster"]["status"] == "disabled", status["cluster"]


def test_published_on_loopback_only(target, alertmanager):
    container = target.container_of("alertmanager")
    bindings = [b for ports in (container["NetworkSettings"]["Ports"] or {}).values() for b in (ports or [])]
    from shipyard import topology

    bind, port = topology.build(target.settings).published(target.rendered.host, "alertmanager")
    assert bind == "127.0.0.1" and [f"{b['HostIp']}:{b['HostPort']}" for b in bindings] == [f"{bind}:{port}"]
