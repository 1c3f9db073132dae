"""Prometheus and Alertmanager as rendered: scrape targets from the topology, the rules under
their promtool tests, the configs under their own validators (promtool, amtool), receivers and
routes from the settings. promtool and amtool come from Debian (make host-test-deps)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shipyard.components.prometheus.settings import LATENCY_BUCKETS_MS, PrometheusSettings
from shipyard.errors import SettingsError
from shipyard.inventory import load_environment
from shipyard.render import render_environment, render_host

PROMETHEUS = Path(__file__).resolve().parents[2] / "shipyard/components/prometheus"
RULES = "prometheus/rules/shipyard.yml"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: run `make host-test-deps` (Debian's prometheus / prometheus-alertmanager)"
    return path


def run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)


def write(files: dict[str, bytes], into: Path) -> Path:
    for rel, content in files.items():
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        (into / rel).write_bytes(content)
    return into


def with_defaults(settings):
    """The environment with SHIPYARD.prometheus at its defaults: what the rules' tests are written for."""
    return settings.model_copy(update={"prometheus": PrometheusSettings()})


@pytest.fixture(scope="module")
def default_rules(repo, tmp_path_factory) -> Path:
    settings = with_defaults(load_environment(repo, "local", {}))
    files = render_host(settings, settings.hosts[0]).files
    out = tmp_path_factory.mktemp("rules")
    for rel, content in files.items():  # every rules file (each test names the one it tests)
        if rel.startswith("prometheus/rules/"):
            (out / Path(rel).name).write_bytes(content)
    return out / "shipyard.yml"


def test_the_rules_pass_their_promtool_tests(default_rules):
    tests = sorted(p.name for p in (PROMETHEUS / "rules_tests").glob("*.test.yml"))
    assert tests
    for name in tests:
        shutil.copy(PROMETHEUS / "rules_tests" / name, default_rules.parent / name)
    result = run([tool("promtool"), "test", "rules", *tests], cwd=default_rules.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests), result.stdout


def _alerts(rules_file: Path) -> list[dict]:
    """Every alert of every rules file beside ``rules_file``."""
    return [r for f in sorted(rules_file.parent.glob("*.yml")) if not f.name.endswith(".test.yml")
            for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_has_a_summary_a_runbook_and_cases_that_fire_and_must_not(default_rules):
    runbooks = (PROMETHEUS / "RUNBOOKS.md").read_text()
    anchors = {re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-")) for h in re.findall(r"^## (.+)$", runbooks, re.M)}
    cases = [t for p in sorted((PROMETHEUS / "rules_tests").glob("*.test.yml"))
             for test in yaml.safe_load(p.read_text())["tests"] for t in test["alert_rule_test"]]
    alerts = _alerts(default_rules)
    assert {"TargetDown", "HostDown", "NoWorkerConsuming", "ApiErrorBudgetBurnFast", "ApiErrorBudgetBurnSlow",
            "ApiLatencyBudgetBurnFast", "ApiLatencyBudgetBurnSlow", "OldestQueuedTaskTooOld", "DeadTasksRising",
            "RuntimeConfigRejected", "RuntimeConfigMismatch"} <= {a["alert"] for a in alerts}
    for alert in alerts:
        name = alert["alert"]
        assert alert["annotations"]["summary"], name
        runbook = alert["annotations"]["runbook"]
        assert runbook.startswith("shipyard/components/prometheus/RUNBOOKS.md#"), name
        assert runbook.split("#")[1] in anchors, f"{name}: no section {runbook.split('#')[1]} in RUNBOOKS.md"
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        assert any(c["alertname"] == name and c.get("exp_alerts") for c in cases), f"{name}: no case where it fires"
        assert any(c["alertname"] == name and not c.get("exp_alerts") for c in cases), f"{name}: no case where it must not"


@pytest.mark.parametrize("env", ["local", "ci", "production"])
def test_each_environments_prometheus_and_alertmanager_configs_pass_their_validators(repo, tmp_path, env):
    settings = load_environment(repo, env, {})
    for host, rendered in render_environment(settings).items():
        for dir_name, rules in (("prometheus", "rules found"), ("host-prometheus", "SUCCESS")):
            if f"{dir_name}/prometheus.yml" not in rendered.files:
                continue
            out = write(rendered.files, tmp_path / host)
            # Bearer tokens are files delivered at deploy time (/run/secrets/ in the container):
            # promtool wants them to exist, so they point at stand-ins here.
            config = out / dir_name / "prometheus.yml"
            (out / "secrets").mkdir(exist_ok=True)
            for name in set(re.findall(r"credentials_file: /run/secrets/(\S+)", config.read_text())):
                (out / "secrets" / name).write_text("token\n")
            config.write_text(config.read_text().replace("/run/secrets/", f"{out}/secrets/"))
            result = run([tool("promtool"), "check", "config", str(config)])
            assert result.returncode == 0 and rules in result.stdout, result.stdout + result.stderr
        if "alertmanager/alertmanager.yml" in rendered.files:
            out = write(rendered.files, tmp_path / host)
            result = run([tool("amtool"), "check-config", str(out / "alertmanager/alertmanager.yml")])
            assert result.returncode == 0, result.stdout + result.stderr


def _jobs(files: dict[str, bytes]) -> dict[str, dict]:
    return {j["job_name"]: j for j in yaml.safe_load(files["prometheus/prometheus.yml"])["scrape_configs"]}


def _labels(job: dict) -> dict[str, str]:
    return {r["target_label"]: r["replacement"] for r in job["relabel_configs"]}


def test_one_host_scrapes_every_instance_with_metrics_by_name_with_its_labels(repo):
    settings = load_environment(repo, "ci", {"SHIPYARD_PROMETHEUS__SCRAPE_INTERVAL_S": "15"})
    jobs = _jobs(render_host(settings, settings.hosts[0]).files)
    assert sorted(jobs) == ["ci/alertmanager", "ci/api-blue", "ci/api-green", "ci/consul-1", "ci/consul-2", "ci/consul-3",
                            "ci/edge-exporter", "ci/logship", "ci/node-exporter",
                            "ci/postgres-exporter", "ci/postgres-replica-exporter-1", "ci/prometheus", "ci/redis-exporter",
                            "ci/redis-replica-exporter-1", "ci/redis-sentinel-exporter-1", "ci/redis-sentinel-exporter-2",
                            "ci/redis-sentinel-exporter-3", "ci/router-exporter", "ci/worker-blue", "ci/worker-green"]
    # An exporter is scraped beside what it watches, by its own compose name, with its component.
    assert _labels(jobs["ci/postgres-replica-exporter-1"]) == {
        "job": "postgres-replica-exporter", "env": "ci", "host": "ci", "component": "postgres",
        "service": "postgres-replica-exporter"}
    # DNS on the project network: every replica of a scaled service, nothing for an absent colour.
    assert jobs["ci/worker-green"]["dns_sd_configs"] == [{"names": ["worker-green"], "type": "A", "port": 9101,
                                                          "refresh_interval": "15s"}]
    assert _labels(jobs["ci/worker-green"]) == {"job": "worker", "env": "ci", "host": "ci", "component": "taskplatform",
                                                "service": "worker", "colour": "green"}
    assert jobs["ci/api-blue"]["dns_sd_configs"][0]["port"] == 8000 and jobs["ci/api-blue"]["metrics_path"] == "/metrics"
    assert _labels(jobs["ci/prometheus"]) == {"job": "prometheus", "env": "ci", "host": "ci", "component": "prometheus",
                                              "service": "prometheus"}
    # Consul's servers: their own metrics behind the ACL, with Prometheus's token (a file).
    assert jobs["ci/consul-2"]["params"] == {"format": ["prometheus"]}
    assert jobs["ci/consul-2"]["authorization"] == {"type": "Bearer",
                                                   "credentials_file": "/run/secrets/consul_metrics_token"}
    config = yaml.safe_load(render_host(settings, settings.hosts[0]).files["prometheus/prometheus.yml"])
    assert config["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["alertmanager:9093"]}]}]
    assert config["global"]["external_labels"] == {"env": "ci"}


def test_every_other_host_runs_a_prometheus_of_its_own_which_the_environments_federates(repo):
    settings = load_environment(repo, "production", {})
    rendered = render_environment(settings)
    jobs = _jobs(rendered["obs-1"].files)
    # Only obs-1's own instances by name, and each other host's Prometheus at its private address.
    assert {name.split("/")[0] for name in jobs if not name.endswith("/federate")} == {"obs-1"}
    federate = {name: job for name, job in jobs.items() if name.endswith("/federate")}
    assert sorted(federate) == ["app-1/host-prometheus/federate", "app-2/host-prometheus/federate",
                                "data-1/host-prometheus/federate", "edge-1/host-prometheus/federate"]
    job = federate["app-2/host-prometheus/federate"]
    assert job["static_configs"] == [{"targets": ["10.0.1.12:9090"]}] and job["metrics_path"] == "/federate"
    assert job["honor_labels"] is True and job["params"] == {"match[]": ['{job!=""}']}
    assert _labels(job) == {"job": "host-prometheus", "env": "production", "host": "app-2",
                            "component": "prometheus", "service": "host-prometheus"}
    assert "host-prometheus" not in rendered["obs-1"].compose["services"]
    # app-2's own: its workers (no port published) by name, with the labels the rules select on.
    app = rendered["app-2"]
    host_jobs = {j["job_name"]: j for j in yaml.safe_load(app.files["host-prometheus/prometheus.yml"])["scrape_configs"]}
    assert {name.split("/")[0] for name in host_jobs} == {"app-2"}
    assert host_jobs["app-2/worker-blue"]["dns_sd_configs"][0]["names"] == ["worker-blue"]
    assert _labels(host_jobs["app-2/worker-blue"]) == {"job": "worker", "env": "production", "host": "app-2",
                                                      "component": "taskplatform", "service": "worker",
                                                      "colour": "blue"}
    assert "rule_files" not in yaml.safe_load(app.files["host-prometheus/prometheus.yml"])
    assert not [f for f in app.files if f.startswith("prometheus/")]
    services = app.compose["services"]
    assert services["host-prometheus"]["ports"] == ["10.0.1.12:9090:9090"] and "ports" not in services["worker-blue"]
    assert "--storage.tsdb.retention.time=2h" in services["host-prometheus"]["command"]
    assert "host-prometheus-data:/prometheus" in services["host-prometheus"]["volumes"]
    # The shippers of every host are expected by the logs rules, not only obs-1's.
    assert all(f'"host", "{host}"' in rendered["obs-1"].files["prometheus/rules/logs.yml"].decode()
               for host in ("app-1", "app-2", "data-1", "edge-1", "obs-1"))


def test_one_host_runs_one_prometheus(repo):
    settings = load_environment(repo, "ci", {})
    services = render_host(settings, settings.hosts[0]).compose["services"]
    assert "prometheus" in services and "host-prometheus" not in services


def test_published_on_loopback_and_data_in_named_volumes(repo):
    for env in ("local", "ci", "production"):
        settings = load_environment(repo, env, {})
        for rendered in render_environment(settings).values():
            services = rendered.compose["services"]
            for name, volume in (("prometheus", "prometheus-data:/prometheus"), ("alertmanager", "alertmanager-data:/alertmanager")):
                if name in services:
                    assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), (env, services[name]["ports"])
                    assert volume in services[name]["volumes"]
                    assert services[name]["healthcheck"]["test"][-1].endswith("/-/ready")


def test_settings_turn_each_off_and_prometheus_then_sends_nowhere(repo):
    settings = load_environment(repo, "ci", {"SHIPYARD_ALERTMANAGER__ENABLED": "false"})
    rendered = render_host(settings, settings.hosts[0])
    assert "alertmanager" not in rendered.compose["services"] and "alerting" not in yaml.safe_load(
        rendered.files["prometheus/prometheus.yml"])
    settings = load_environment(repo, "ci", {"SHIPYARD_PROMETHEUS__ENABLED": "false"})
    rendered = render_host(settings, settings.hosts[0])
    assert "prometheus" not in rendered.compose["services"] and "prometheus/prometheus.yml" not in rendered.files


def test_intervals_retention_and_waits_come_from_the_settings(repo):
    settings = load_environment(repo, "ci", {"SHIPYARD_PROMETHEUS__SCRAPE_INTERVAL_S": "5",
                                             "SHIPYARD_PROMETHEUS__EVALUATION_INTERVAL_S": "2",
                                             "SHIPYARD_PROMETHEUS__RETENTION_DAYS": "3",
                                             "SHIPYARD_PROMETHEUS__ALERTS__NO_WORKER_S": "10"})
    rendered = render_host(settings, settings.hosts[0])
    config = yaml.safe_load(rendered.files["prometheus/prometheus.yml"])
    assert config["global"]["scrape_interval"] == "5s" and config["global"]["evaluation_interval"] == "2s"
    assert "--storage.tsdb.retention.time=3d" in rendered.compose["services"]["prometheus"]["command"]
    rules = {r.get("alert"): r for g in yaml.safe_load(rendered.files[RULES])["groups"] for r in g["rules"]}
    assert rules["NoWorkerConsuming"]["for"] == "10s"


@pytest.mark.parametrize("variables, message", [
    ({"SHIPYARD_PROMETHEUS__EVALUATION_INTERVAL_S": "60", "SHIPYARD_PROMETHEUS__ALERTS__NO_WORKER_S": "30"},
     "evaluation_interval_s (60) is longer than alerts.oldest_queued_s (5); lower evaluation_interval_s or raise alerts.oldest_queued_s"),
    ({"SHIPYARD_ALERTMANAGER__WEBHOOK_URLS": '["http://hooks.example/x\\" ; rm -rf /"]'},
     "is not an http(s) URL"),
    ({"SHIPYARD_ALERTMANAGER__EMAIL_TO": '["ops@example.com"]'},
     "email_to is set but email_from or smarthost is not"),
    ({"SHIPYARD_PROMETHEUS__SCRAPE_INTERVAL_S": "0"}, "SHIPYARD_PROMETHEUS__SCRAPE_INTERVAL_S"),
    ({"SHIPYARD_PROMETHEUS__LATENCY_THRESHOLD_MS": "300"},
     "latency_threshold_ms (300) is not a bucket boundary of the API's http_request_duration_seconds; use one of 2, 5,"),
])
def test_bad_settings_are_refused_before_any_host_naming_key_and_fix(repo, variables, message):
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "ci", variables)
    assert message in str(err.value)


def _alertmanager(repo, tmp_path, variables: dict[str, str]) -> tuple[Path, dict]:
    settings = load_environment(repo, "ci", variables)
    out = write(render_host(settings, settings.hosts[0]).files, tmp_path)
    path = out / "alertmanager/alertmanager.yml"
    return path, yaml.safe_load(path.read_text())


def test_receivers_come_from_the_settings(repo, tmp_path):
    path, config = _alertmanager(repo, tmp_path, {
        "SHIPYARD_ALERTMANAGER__WEBHOOK_URLS": '["http://10.0.0.9:9000/hook", "https://hooks.example/a?b=c"]',
        "SHIPYARD_ALERTMANAGER__EMAIL_TO": '["ops@example.com"]', "SHIPYARD_ALERTMANAGER__EMAIL_FROM": "am@example.com",
        "SHIPYARD_ALERTMANAGER__SMARTHOST": "smtp.example.com:587", "SHIPYARD_ALERTMANAGER__GROUP_WAIT_S": "5"})
    page = next(r for r in config["receivers"] if r["name"] == "page")
    assert page["webhook_configs"] == [{"url": "http://10.0.0.9:9000/hook", "send_resolved": True},
                                       {"url": "https://hooks.example/a?b=c", "send_resolved": True}]
    assert page["email_configs"] == [{"to": "ops@example.com", "from": "am@example.com",
                                      "smarthost": "smtp.example.com:587", "send_resolved": True}]
    assert config["route"]["group_wait"] == "5s"
    result = run([tool("amtool"), "check-config", str(path)])
    assert result.returncode == 0 and "2 receivers" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("labels, receiver", [
    (["alertname=NoWorkerConsuming", "severity=critical", "env=ci"], "page"),
    (["alertname=HostDown", "severity=critical", "env=ci", "host=ci"], "page"),
    (["alertname=TargetDown", "severity=warning", "env=ci", "host=ci", "job=worker"], "notify"),
    (["alertname=RuntimeConfigRejected", "severity=warning", "env=ci"], "notify"),
    (["alertname=Unlabelled"], "notify"),  # an alert without severity still reaches someone
])
def test_routes_send_critical_alerts_to_page_and_the_rest_to_notify(repo, tmp_path, labels, receiver):
    path, _ = _alertmanager(repo, tmp_path, {})
    result = run([tool("amtool"), "config", "routes", "test", f"--config.file={path}",
                  f"--verify.receivers={receiver}", *labels])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_a_host_down_inhibits_that_hosts_other_alerts_and_a_target_down_its_own(repo, tmp_path):
    _, config = _alertmanager(repo, tmp_path, {})
    host, target = config["inhibit_rules"]
    assert host == {"source_matchers": ['alertname="HostDown"'], "target_matchers": ['alertname!="HostDown"'],
                    "equal": ["env", "host"]}
    assert target["source_matchers"] == ['alertname="TargetDown"'] and target["equal"] == ["env", "host", "job", "instance"]
    # The labels the inhibitions match on are the ones every target carries (test above) and the
    # rules keep: HostDown keeps env and host.
    assert config["route"]["group_by"] == ["env", "alertname", "host"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_inhibitions_hold_in_a_real_alertmanager(repo, tmp_path):
    """The rendered config in Debian's Alertmanager on loopback: alerts posted to its API, and
    the ones it marks inhibited read back."""
    import time

    import requests

    path, _ = _alertmanager(repo, tmp_path, {})
    port = _free_port()
    server = subprocess.Popen([tool("prometheus-alertmanager"), f"--config.file={path}",
                               f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                               "--cluster.listen-address="], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/api/v2"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and server.poll() is None, server.stderr.read().decode()
            time.sleep(0.1)

        def alert(name: str, **labels: str) -> dict:
            return {"labels": {"alertname": name, "env": "ci", **labels}}

        posted = [alert("HostDown", host="h1", severity="critical"),
                  alert("TargetDown", host="h1", job="api", instance="a:8000", severity="warning"),
                  alert("RuntimeConfigRejected", host="h1", job="api", instance="a:8000", severity="warning"),
                  alert("TargetDown", host="h2", job="worker", instance="w:9101", severity="warning"),
                  alert("RuntimeConfigRejected", host="h2", job="worker", instance="w:9101", severity="warning"),
                  alert("RuntimeConfigRejected", host="h2", job="api", instance="b:8000", severity="warning")]
        assert requests.post(f"{base}/alerts", json=posted, timeout=5).status_code == 200

        def key(a: dict) -> tuple[str, str, str]:
            return a["labels"]["alertname"], a["labels"]["host"], a["labels"].get("instance", "")

        expected_inhibited = {("TargetDown", "h1", "a:8000"), ("RuntimeConfigRejected", "h1", "a:8000"),
                              ("RuntimeConfigRejected", "h2", "w:9101")}
        deadline = time.monotonic() + 20
        while True:
            alerts = requests.get(f"{base}/alerts", timeout=5).json()
            inhibited = {key(a) for a in alerts if a["status"]["inhibitedBy"]}
            if (len(alerts) == len(posted) and inhibited == expected_inhibited) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(alerts) == len(posted)
        # h1 is down: its other alerts wait on HostDown; on h2 a down target silences its own
        # config alert only, not the API's beside it, nor itself.
        assert inhibited == expected_inhibited
        # `make alerts` shows the same, through the published port the settings give.
        import os
        import sys

        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
        shown = subprocess.run([sys.executable, "-m", "shipyard", "alerts", "--env", "ci"], cwd=repo, timeout=60,
                               env={**env, "SHIPYARD_PORTS__ALERTMANAGER_HTTP": str(port)}, capture_output=True, text=True)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].split() == ["alert", "severity", "host", "target", "since", "state", "summary"]
        assert lines[1].startswith("HostDown") and "active" in lines[1], shown.stdout
        assert sum("(inhibited)" in line for line in lines) == 3 and len(lines) == 1 + len(posted), shown.stdout
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_make_status_sums_up_the_scrape_health_by_service():
    from shipyard.components.prometheus.status import scrape_health

    def target(service: str, instance: str, health: str, error: str = "") -> dict:
        return {"labels": {"job": service, "service": service, "instance": instance}, "health": health,
                "lastError": error}

    assert scrape_health([]) == "no target discovered yet"
    assert scrape_health([target("api", "a:8000", "up"), target("worker", "w:9101", "up")]) == \
        "2/2 targets up (api 1/1, worker 1/1)"
    assert scrape_health([target("api", "a:8000", "up"), target("worker", "w:9101", "down", "connection refused")]) == \
        "1/2 targets up (api 1/1, worker 0/1); down: worker w:9101 (down: connection refused)"


def test_the_latency_thresholds_are_the_apis_histogram_buckets(repo):
    """The settings' copy of the buckets (the core imports no service code) is the API's."""
    source = (repo / "services/taskplatform/metrics.py").read_text()
    buckets = re.search(r'Histogram\("http_request_duration_seconds".*?buckets=\(([^)]*)\)', source, re.S).group(1)
    assert tuple(round(float(b) * 1000) for b in buckets.split(",")) == LATENCY_BUCKETS_MS


@pytest.mark.parametrize("threshold_ms, le", [(250, "0.25"), (1000, "1.0"), (5, "0.005")])
def test_the_latency_rules_read_the_bucket_of_the_threshold_as_prometheus_client_names_it(repo, threshold_ms, le):
    settings = load_environment(repo, "ci", {"SHIPYARD_PROMETHEUS__LATENCY_THRESHOLD_MS": str(threshold_ms),
                                             "SHIPYARD_PROMETHEUS__LATENCY_OBJECTIVE": "0.95"})
    groups = yaml.safe_load(render_host(settings, settings.hosts[0]).files[RULES])["groups"]
    rules = {r.get("record") or r["alert"]: r for g in groups for r in g["rules"]}
    assert f'le="{le}"' in rules["env:api_slow_ratio:rate5m"]["expr"]
    assert "(14.4 * 0.05)" in rules["ApiLatencyBudgetBurnFast"]["expr"]
    assert f"longer than {threshold_ms} ms" in rules["ApiLatencyBudgetBurnSlow"]["annotations"]["summary"]


@pytest.mark.parametrize("env", ["local", "ci", "production"])
def test_exporters_sit_beside_what_they_watch_and_publish_nothing(repo, env):
    """One postgres exporter per node, one redis exporter per node and per Sentinel, one nginx
    exporter per nginx, a node exporter on every host; cAdvisor only under the official images.
    None of them publishes a port: Prometheus scrapes them on the project network."""
    settings = load_environment(repo, env, {})
    hosts = render_environment(settings)
    placed = {name: host for host, rendered in hosts.items() for name in rendered.compose["services"]}
    watched = {"postgres-exporter": "postgres", "redis-exporter": "redis", "edge-exporter": "edge",
               "router-exporter": "router"}
    watched |= {f"postgres-replica-exporter-{n}": f"postgres-replica-{n}" for n in range(1, settings.postgres.replicas + 1)}
    watched |= {f"redis-replica-exporter-{n}": f"redis-replica-{n}" for n in range(1, settings.redis.replicas + 1)}
    watched |= {f"redis-sentinel-exporter-{n}": f"redis-sentinel-{n}" for n in range(1, settings.redis.sentinels + 1)}
    for exporter, target in watched.items():
        assert placed[exporter] == placed[target], (exporter, target)
    for host, rendered in hosts.items():
        services = rendered.compose["services"]
        assert "node-exporter" in services, host
        assert ("cadvisor" in services) == (settings.images.source == "official"), host
        for name, svc in services.items():
            if name.endswith("exporter") or "-exporter-" in name or name == "cadvisor":
                assert "ports" not in svc, (host, name, svc.get("ports"))
    # The exporters read the node they watch, as their own role, the password from a file.
    postgres_host = hosts[placed["postgres-exporter"]].compose["services"]
    assert postgres_host["postgres-exporter"]["environment"] == {
        "DATA_SOURCE_URI": "postgres:5432/postgres?sslmode=disable", "DATA_SOURCE_USER": "postgres_exporter",
        "DATA_SOURCE_PASS_FILE": "/run/secrets/pg_exporter_password"}
