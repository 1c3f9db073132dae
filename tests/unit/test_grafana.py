"""Grafana as rendered: only under the `official` image source, provisioning files in the
structure Grafana's provisioning docs give (datasources and a file provider, apiVersion 1), the
dashboards built as code and rendered byte for byte, every query valid PromQL (promtool), the
admin password from a file only."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from shipyard import image_plan, topology
from shipyard.components.grafana import DASHBOARDS_DIR, PROVISIONING, SECRET, VERSION, dashboards
from shipyard.inventory import load_environment
from shipyard.render import render_environment, render_host

OFFICIAL = {"SHIPYARD_IMAGES__SOURCE": "official"}
DATASOURCES = "grafana/datasources/prometheus.yaml"
PROVIDERS = "grafana/dashboards/shipyard.yaml"
# The app's metric names the panels must draw (issue 19), exactly.
APP_METRICS = ("tasks_created_total", "tasks_completed_total", "tasks_failed_total", "tasks_dead_total",
               "tasks_queued", "tasks_oldest_queued_age_seconds", "worker_slots", "worker_tasks_running",
               "db_pool_connections", "db_pool_waiting", "db_pool_max", "release_info", "config_version_info",
               "config_rejections_total", "http_requests_total", "http_request_duration_seconds_bucket")


def _obs(repo, env: str, variables: dict[str, str] | None = None):
    settings = load_environment(repo, env, variables or {})
    host = settings.hosts_with_role("observability")[0]
    return settings, render_host(settings, host)


def _all_queries():
    return [q for name in dashboards.DASHBOARDS
            for q in dashboards.panel_queries(dashboards.build(name)) + dashboards.annotation_queries(dashboards.build(name))]


@pytest.mark.parametrize("env", ["local", "ci"])
def test_the_local_image_source_runs_no_grafana_and_needs_no_image(repo, env):
    settings, rendered = _obs(repo, env)
    assert settings.images.source == "local" and settings.grafana.enabled
    assert "grafana" not in rendered.compose["services"]
    assert not any(path.startswith("grafana/") for path in rendered.files)
    assert not topology.build(settings).instances_of("grafana")
    builds = image_plan.build_plan(repo, settings, [(i.component, i.service.image)
                                                    for i in topology.build(settings).instances_on(settings.hosts[0])])
    assert not any("grafana" in b.ref for b in builds)


def test_the_official_source_runs_the_pinned_image_on_loopback_with_its_data_in_a_volume(repo):
    settings, rendered = _obs(repo, "ci", OFFICIAL)
    svc = rendered.compose["services"]["grafana"]
    assert svc["image"] == f"grafana/grafana:{VERSION}"
    assert svc["ports"] == ["127.0.0.1:13000:3000"]
    assert "grafana-data:/var/lib/grafana" in svc["volumes"]
    assert f"./grafana:{PROVISIONING}:ro" in svc["volumes"]
    assert svc["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    pulls = image_plan.images_to_pull(settings, [(i.component, i.service.image)
                                                 for i in topology.build(settings).instances_on(settings.hosts[0])])
    assert f"grafana/grafana:{VERSION}" in pulls
    # production: the same through its registry mirror, on its observability host only.
    settings, rendered = _obs(repo, "production")
    assert rendered.compose["services"]["grafana"]["image"].startswith("registry.internal.example:5000/grafana/grafana:")
    others = [r for name, r in render_environment(settings).items() if name != rendered.host.name]
    assert not any("grafana" in r.compose["services"] for r in others)


@pytest.mark.parametrize("off", ["SHIPYARD_GRAFANA__ENABLED", "SHIPYARD_PROMETHEUS__ENABLED"])
def test_a_setting_turns_it_off_and_so_does_no_prometheus(repo, off):
    _, rendered = _obs(repo, "ci", {**OFFICIAL, off: "false"})
    assert "grafana" not in rendered.compose["services"] and DATASOURCES not in rendered.files


def test_the_admin_password_is_a_file_never_a_value(repo):
    _, rendered = _obs(repo, "production")
    svc = rendered.compose["services"]["grafana"]
    env = svc["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == f"/run/secrets/{SECRET}"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env and "./secrets/grafana:/run/secrets:ro" in svc["volumes"]
    assert "GF_SECURITY_ADMIN_PASSWORD:" not in rendered.files["compose.yaml"].decode()


@pytest.mark.parametrize("env,variables", [("production", {}), ("ci", OFFICIAL)])
def test_the_datasource_is_the_environments_prometheus_in_grafanas_provisioning_structure(repo, env, variables):
    settings, rendered = _obs(repo, env, variables)
    doc = yaml.safe_load(rendered.files[DATASOURCES])
    assert doc["apiVersion"] == 1 and set(doc) == {"apiVersion", "datasources"}
    [source] = doc["datasources"]
    # Required by Grafana: name, type, access; the uid is what every dashboard refers to.
    assert source["name"] and source["type"] == "prometheus" and source["access"] == "proxy"
    assert source["uid"] == dashboards.DATASOURCE_UID and source["isDefault"] is True and source["orgId"] == 1
    [prom] = topology.build(settings).instances_of("prometheus", "prometheus")
    assert prom.host.name == rendered.host.name  # one host: reached by its compose name
    assert source["url"] == "http://prometheus:9090"
    assert source["jsonData"]["timeInterval"] == f"{settings.prometheus.scrape_interval_s}s"


def test_the_file_provider_points_where_the_dashboards_are_mounted(repo):
    _, rendered = _obs(repo, "production")
    doc = yaml.safe_load(rendered.files[PROVIDERS])
    assert doc["apiVersion"] == 1 and set(doc) == {"apiVersion", "providers"}
    [provider] = doc["providers"]
    assert provider["type"] == "file" and provider["name"] and provider["orgId"] == 1
    assert provider["disableDeletion"] is True and provider["allowUiUpdates"] is False
    # The config dir ./grafana is mounted at PROVISIONING: the path inside maps to files rendered here.
    assert provider["options"]["path"] == DASHBOARDS_DIR and DASHBOARDS_DIR.startswith(PROVISIONING + "/")
    inside = "grafana" + DASHBOARDS_DIR.removeprefix(PROVISIONING)
    shipped = sorted(p for p in rendered.files if p.startswith(inside + "/"))
    assert shipped == sorted(f"{inside}/{name}.json" for name in dashboards.DASHBOARDS)
    home = rendered.compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.removeprefix(DASHBOARDS_DIR + "/") + "" in {f"{n}.json" for n in dashboards.DASHBOARDS}
    # Folders Grafana reads at start exist (empty), so it logs no error about them.
    assert {"grafana/plugins/README.md", "grafana/alerting/README.md"} <= set(rendered.static)


def test_the_rendered_dashboards_are_a_fresh_build_and_the_build_is_deterministic(repo):
    _, rendered = _obs(repo, "production")
    inside = "grafana" + DASHBOARDS_DIR.removeprefix(PROVISIONING)
    fresh = dashboards.built()
    assert fresh == dashboards.built()
    for name, text in fresh.items():
        assert rendered.files[f"{inside}/{name}.json"].decode() == text, name
    # And what is committed under compose/ is that render (the stale-compose test checks every file too).
    committed = repo / "compose/production" / rendered.host.name / inside
    assert {p.stem: p.read_text() for p in committed.glob("*.json")} == fresh


def test_every_dashboard_is_well_formed_for_grafana():
    uids = set()
    for name in dashboards.DASHBOARDS:
        model = dashboards.build(name)
        assert model["uid"] not in uids and len(model["uid"]) <= 40, name
        uids.add(model["uid"])
        assert model["title"] and isinstance(model["schemaVersion"], int)
        assert [v["name"] for v in model["templating"]["list"]] == ["env"]
        panels = [p for p in model["panels"] if p["type"] != "row"]
        titles = [p["title"] for p in panels]
        assert len(titles) == len(set(titles)), name
        for panel in panels:
            assert panel["datasource"] == {"type": "prometheus", "uid": dashboards.DATASOURCE_UID}, panel["title"]
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]


def test_every_query_selects_the_environment_and_the_panels_draw_every_app_metric():
    queries = _all_queries()
    for query in queries:
        assert query.expr.count('env="$env"') == query.expr.count("{"), f"{query}: a selector without env=\"$env\""
    exprs = " ".join(q.expr for q in queries)
    assert [m for m in APP_METRICS if m not in exprs] == []


def test_every_query_is_valid_promql(tmp_path):
    """promtool parses each query (as a recording rule), with the variables Grafana substitutes."""
    values = {"env": "ci", "__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
    rules = [{"record": f"panel:{n}", "expr": dashboards.with_variables(q.expr, values)}
             for n, q in enumerate(_all_queries())]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: run `make host-test-tools` (Debian's prometheus)"
    done = subprocess.run([promtool, "check", "rules", str(tmp_path / "queries.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_variable_without_a_value_is_an_error_naming_it():
    assert dashboards.with_variables('x{env="${env}"}[$__rate_interval] [[env]]',
                                     {"env": "ci", "__rate_interval": "20s"}) == 'x{env="ci"}[20s] ci'
    with pytest.raises(KeyError, match=r"\$colour"):
        dashboards.with_variables('x{colour="$colour"}', {"env": "ci"})


def test_a_collapsed_rows_panels_are_found_too():
    model = {"title": "d", "panels": [{"type": "row", "title": "r", "panels": [
        {"title": "p", "targets": [{"refId": "A", "expr": "up"}]}]}]}
    assert [str(q) for q in dashboards.panel_queries(model)] == ["d / p / A"]
    assert json.dumps(model)  # plain data
