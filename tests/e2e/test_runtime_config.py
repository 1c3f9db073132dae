"""Runtime config through the real Consul of the rolled-out environment: a push under task
traffic is applied by every process with no failed request and no restart; a bad value is
refused before anything is written; a lost check-and-set writes nothing; a rollback; and with
every Consul server stopped the platform keeps serving on the config it has."""

import json
import re
import subprocess
import time

import pytest
import requests

from shipyard.components.consul.kv import ConsulKV, StaleWrite
from shipyard.components.taskplatform import runtime
from shipyard.inventory import load_environment
from shipyard.secretstore import load_or_create
from shipyard.topology import instance_names
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


def test_with_every_consul_server_stopped_the_platform_keeps_serving_and_reports_itself_stale(env_name, settings):
    client = api_client(settings)
    servers = [f"{settings.compose_project}-{name}-1" for name in instance_names(settings, "consul", "consul")]
    subprocess.run(["docker", "stop", "-t", "5", *servers], check=True, capture_output=True)
    try:
        with Traffic(client) as traffic:
            deadline = time.monotonic() + 60
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
    finally:
        subprocess.run(["docker", "start", *servers], check=True, capture_output=True)
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
