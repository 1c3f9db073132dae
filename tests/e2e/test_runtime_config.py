"""Runtime config through the real Consul of the rolled-out environment: a push under task
traffic is applied by every process with no failed request and no restart; a bad value is
refused before anything is written; a lost check-and-set writes nothing; a rollback; and with
every Consul server stopped the platform keeps serving on the config it has."""

import json
import re
import subprocess
import time

import pytest

from shipyard.controller.releases import live_instance
from shipyard.components.consul.kv import ConsulKV, StaleWrite
from shipyard.components.taskplatform import runtime
from shipyard.inventory import load_environment
from shipyard.secretstore import load_or_create
from shipyard import topology
from tests.drill_traffic import Traffic, api_client, wait_all_processed

from .conftest import REPO, container_states, run_shipyard


@pytest.fixture(scope="module")
def settings(env_name):
    return load_environment(REPO, env_name)


@pytest.fixture(scope="module")
def token(env_name):
    return load_or_create(REPO, env_name, generate_missing=False)["consul_management_token"].value


def _config(*args: str):
    return run_shipyard(*args)


def test_a_push_under_traffic_is_applied_by_every_process_with_no_failed_request_and_no_restart(
        env_name, settings, token):
    client = api_client(settings)
    current = runtime.current_document(settings, token)["worker_concurrency"]
    wanted = current % 8 + 1  # another value in 1..8
    before = container_states(settings.compose_project)
    with Traffic(client) as traffic:
        time.sleep(1)
        result = _config("config-set", "--env", env_name, "--key", "worker_concurrency", "--value", str(wanted))
        time.sleep(1)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"worker_concurrency: {current} -> {wanted}" in result.stdout and "applied by all" in result.stdout
    assert traffic.refused == 0 and len(traffic.accepted) > 0
    assert container_states(settings.compose_project) == before  # nothing restarted
    counts = wait_all_processed(client, traffic.accepted)
    assert counts["processed"] == counts["accepted"], counts


def test_a_bad_value_is_refused_before_anything_is_written(env_name, settings, token):
    versions = len(runtime.history(settings, token))
    result = _config("config-set", "--env", env_name, "--key", "worker_concurrency", "--value", "0")
    assert result.returncode == 2
    assert "runtime config: invalid: worker_concurrency" in result.stderr and "nothing was written" in result.stderr
    result = _config("config-set", "--env", env_name, "--key", "worker_concurency", "--value", "3")
    assert result.returncode == 2 and "unknown keys ['worker_concurency']" in result.stderr
    assert len(runtime.history(settings, token)) == versions


def test_a_push_that_lost_the_race_writes_nothing(settings, token):
    kv = ConsulKV(settings, token)
    key = runtime.runtime_key(settings.name)
    read = kv.get(key)
    doc = json.loads(read.value)
    kv.write(key, runtime.encode({**doc, "version": str(int(doc["version"]) + 1)}), read.modify_index)
    with pytest.raises(StaleWrite):  # a second writer holding the same read loses
        kv.write(key, runtime.encode({**doc, "log_level": "DEBUG"}), read.modify_index)
    assert json.loads(kv.get(key).value).get("log_level") == doc.get("log_level")


def _all_reports(settings, condition, timeout_s: float = 20.0) -> list:
    deadline = time.monotonic() + timeout_s
    while True:
        reports, silent = runtime.read_reports(settings)
        if reports and not silent and all(condition(r.state) for r in reports):
            return reports
        if time.monotonic() >= deadline:
            raise AssertionError([r.state for r in reports] + silent)
        time.sleep(0.2)


def test_an_invalid_value_written_around_the_push_is_rejected_by_every_process_until_the_fix(env_name, settings, token):
    kv = ConsulKV(settings, token)
    key = runtime.runtime_key(settings.name)
    read = kv.get(key)
    good = json.loads(read.value)
    bad = runtime.encode({**good, "version": str(int(good["version"]) + 1), "worker_concurrency": 0})
    kv.write(key, bad, read.modify_index)  # the management token, straight into Consul
    reports = _all_reports(settings, lambda st: (st.get("rejected") or {}).get("hash") == runtime.doc_hash(bad))
    for report in reports:  # each keeps the old one and says why
        assert report.state["version"] == good["version"], report
        assert "worker_concurrency" in report.state["rejected"]["reason"], report
    assert all(f"rejected it: worker_concurrency" in line
               for line in runtime.not_applied(reports, runtime.doc_hash(bad)))
    fixed = _config("config-set", "--env", env_name, "--key", "worker_concurrency", "--value", "3")
    assert fixed.returncode == 0 and "worker_concurrency: 0 -> 3" in fixed.stdout, fixed.stdout + fixed.stderr
    _all_reports(settings, lambda st: st.get("rejected") is None and st["version"] == str(int(good["version"]) + 2))


def _consul_containers(settings) -> dict[str, str]:
    """address:8300 → container name of every Consul server."""
    names = [f"{settings.compose_project}-{n}-1" for n in topology.build(settings).instance_names("consul", "consul")]
    out = subprocess.run(["docker", "inspect", "--format",
                          "{{.Name}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", *names],
                         capture_output=True, text=True, check=True).stdout
    return {f"{line.split()[1]}:8300": line.split()[0].lstrip("/") for line in out.splitlines()}


def _leader(settings, token) -> str:
    kv = ConsulKV(settings, token)
    return kv._call("GET", "/status/leader").json()


def _wait_healthy(containers: list[str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}", *containers],
                                capture_output=True, text=True).stdout.split()
        if states == ["healthy"] * len(containers):
            return
        time.sleep(0.5)
    raise AssertionError(f"not healthy after {timeout_s}s: {containers} {states}")


def _wait_settled(settings, token, servers: list[str], steady_s: float = 10.0, timeout_s: float = 120.0) -> None:
    """After a drill that disturbed the servers: every one healthy and the same leader for
    ``steady_s`` (raft timers that ran while servers were frozen or gone still fire an election
    or two), so the next test does not deploy into a cluster still electing."""
    _wait_healthy(servers)
    deadline, since, leader = time.monotonic() + timeout_s, time.monotonic(), None
    while time.monotonic() < deadline:
        try:
            now = _leader(settings, token)
        except Exception:  # noqa: BLE001 - a server may still be starting
            now = ""
        if not now or now != leader:
            leader, since = now, time.monotonic()
        elif time.monotonic() - since >= steady_s:
            return
        time.sleep(0.5)
    raise AssertionError(f"Consul did not settle on a leader within {timeout_s}s (last: {leader!r})")


def test_with_the_leader_stopped_a_new_one_is_elected_and_pushes_work(env_name, settings, token):
    if settings.consul.servers < 3:
        pytest.skip("one Consul server: no quorum to elect another leader")
    containers = _consul_containers(settings)
    old = _leader(settings, token)
    subprocess.run(["docker", "stop", "-t", "5", containers[old]], check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 30
        new = ""
        while time.monotonic() < deadline and new in ("", old):
            try:
                new = _leader(settings, token)
            except Exception:  # noqa: BLE001 - the stopped server may be the first one asked
                new = ""
            time.sleep(0.2)
        assert new and new != old and new in containers
        doc = runtime.current_document(settings, token)
        pushed = runtime.push(settings, token, {**doc, "retry_base_seconds": doc["retry_base_seconds"] + 0.5},
                              "test: new leader")
        assert "applied by all" in pushed
    finally:
        subprocess.run(["docker", "start", containers[old]], check=True, capture_output=True)
        _wait_settled(settings, token, list(containers.values()))


def test_history_and_rollback(env_name, settings, token):
    doc = runtime.current_document(settings, token)
    a, b = doc["retry_max_seconds"] + 1, doc["retry_max_seconds"] + 2
    first = runtime.push(settings, token, {**doc, "retry_max_seconds": a}, "test: first")
    runtime.push(settings, token, {**doc, "retry_max_seconds": b}, "test: second")
    version = re.search(r"runtime config version (\d+)", first).group(1)
    result = _config("config-rollback", "--env", env_name, "--to", version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"retry_max_seconds: {b} -> {a}" in result.stdout and "applied by all" in result.stdout
    assert runtime.current_document(settings, token)["retry_max_seconds"] == a
    listed = _config("config-history", "--env", env_name).stdout
    assert "seeded by the first deploy" in listed and f"rollback to version {version}" in listed


# Stopped: connections refused at once. Partitioned (frozen): every read hangs until it times out.
OUTAGES = {"stopped": (("stop", "-t", "5"), ("start",)), "partitioned": (("pause",), ("unpause",))}


@pytest.mark.parametrize("outage", OUTAGES)
def test_with_every_consul_server_out_the_platform_keeps_serving_and_reports_itself_stale(
        env_name, settings, token, outage):
    client = api_client(settings)
    servers = [f"{settings.compose_project}-{name}-1" for name in topology.build(settings).instance_names("consul", "consul")]
    cut, restore = OUTAGES[outage]
    subprocess.run(["docker", *cut, *servers], check=True, capture_output=True)
    try:
        with Traffic(client) as traffic:
            deadline = time.monotonic() + 90  # a blocking read of a frozen server times out (wait + 5 s)
            state = {}
            while time.monotonic() < deadline:
                state = client.get(f"{client.base}/health/ready", timeout=5)
                assert state.status_code == 200, state.text  # readiness does not depend on Consul
                reports, _ = runtime.read_reports(settings)
                if reports and all((r.state.get("watch") or {}).get("state") == "failing" for r in reports):
                    break
                time.sleep(0.5)
            assert reports and all(r.state["watch"]["state"] == "failing" for r in reports), reports
            time.sleep(1)
        assert traffic.refused == 0 and len(traffic.accepted) > 0
        # An API container restarted during the outage starts with the cached config.
        version = reports[0].state["version"]
        api = f"{settings.compose_project}-{live_instance(settings, 'api')}-1"
        subprocess.run(["docker", "restart", api], check=True, capture_output=True)
        _wait_healthy([api])
        restarted = [r for r in _all_reports(settings, lambda st: st["version"] is not None) if api in r.where]
        assert restarted and all(r.state["version"] == version and r.state["watch"]["state"] == "failing"
                                 for r in restarted), restarted
    finally:
        # Stopped servers come back on their fixed addresses, which raft knows them by.
        subprocess.run(["docker", *restore, *servers], check=True, capture_output=True)
        # Their health probes failed meanwhile: settled again before the next test deploys.
        _wait_settled(settings, token, servers)
    counts = wait_all_processed(client, traffic.accepted)
    assert counts["processed"] == counts["accepted"], counts
    # Consul back: every process reads it again.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reports, _ = runtime.read_reports(settings)
        if reports and all(r.state["watch"]["state"] == "ok" for r in reports):
            break
        time.sleep(0.5)
    assert all(r.state["watch"]["state"] == "ok" for r in reports), reports
