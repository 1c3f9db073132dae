"""Grafana: the dashboards of dashboards.py (built as code with grafana-foundation-sdk) over the
environment's Prometheus, provisioned from the repo.

Runs only under the ``official`` image source (``grafana/grafana`` pinned below): Grafana has no
Debian package, so there is no ``local`` recipe and under ``local`` (``local``, ``ci``) the
service has no instance at all (``scale`` 0), whatever ``grafana.enabled`` says. The dashboards
are code all the same (dashboards.py): ``tests/e2e/test_dashboards.py`` proves each panel's
queries against any running environment's Prometheus, Grafana or not.

One instance on the observability group's first host, published on loopback only
(``ports.grafana_http``), its database in a named volume. Provisioning (templates/grafana/,
mounted read-only at Grafana's provisioning path): the Prometheus datasource at the address the
topology gives, a file provider for the dashboards. The first admin's password is the secret
``grafana_admin_password``, read from a file (``GF_SECURITY_ADMIN_PASSWORD__FILE``): never in
the environment or the compose file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from shipyard import yamltext
from shipyard.component import Component, ConfigDir, Health, Image, Metrics, Port, Rotation, SecretFile, Service
from shipyard.components.grafana import dashboards
from shipyard.components.grafana.settings import GrafanaSettings

UID = 472  # grafana, as in the official image
VERSION = "11.6.0"  # the grafana-foundation-sdk pin is built for this Grafana minor (requirements.txt)
PORT = 3000
PROVISIONING = "/etc/grafana/provisioning"  # the image's default GF_PATHS_PROVISIONING
DASHBOARDS_DIR = f"{PROVISIONING}/dashboards/shipyard"
SECRET = "grafana_admin_password"

# Grafana keeps the admin's password in its database once created: the variable counts at the
# first start only. A rotated value is set in the running server instead (read from stdin, so
# it never shows in a process list).
_ROTATE = ("sh", "-c", f"grafana cli --homepath /usr/share/grafana admin reset-admin-password "
                       f"--password-from-stdin < /run/secrets/{SECRET}")


def runs(settings) -> bool:
    """Grafana runs where it is enabled, the image source gives it and Prometheus runs (every
    dashboard reads it)."""
    return settings.grafana.enabled and settings.prometheus.enabled and settings.images.source == "official"


def datasources(ctx) -> dict[str, Any]:
    """provisioning/datasources/prometheus.yaml as data: the environment's Prometheus."""
    prom = ctx.endpoints("prometheus", "prometheus")
    interval = ctx.section("prometheus").scrape_interval_s
    return {"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "type": "prometheus", "uid": dashboards.DATASOURCE_UID, "access": "proxy",
        "orgId": 1, "url": f"http://{prom[0]}", "isDefault": True, "editable": False,
        # $__rate_interval is at least four scrapes: tell Grafana the real interval.
        "jsonData": {"timeInterval": f"{interval}s", "httpMethod": "POST"}}]}


def dashboard_providers() -> dict[str, Any]:
    """provisioning/dashboards/shipyard.yaml as data: a file provider over the built dashboards."""
    return {"apiVersion": 1, "providers": [{
        "name": "shipyard", "orgId": 1, "folder": dashboards.FOLDER, "type": "file",
        # The repo is the source: a dashboard deleted or edited in the UI comes back at the next scan.
        "disableDeletion": True, "allowUiUpdates": False, "updateIntervalSeconds": 30,
        "options": {"path": DASHBOARDS_DIR, "foldersFromFilesStructure": False}}]}


def _yaml(doc: dict[str, Any]) -> str:
    return yamltext.dump(doc)


def template_context(ctx) -> dict[str, Any]:
    return {"env": ctx.env, "datasources_yaml": _yaml(datasources(ctx)),
            "providers_yaml": _yaml(dashboard_providers()), "dashboards": dashboards.built()}


def compose_service(ctx, inst) -> dict[str, Any]:
    graf: GrafanaSettings = ctx.section("grafana")
    return {
        "environment": {
            "GF_SECURITY_ADMIN_USER": graf.admin_user,
            "GF_SECURITY_ADMIN_PASSWORD__FILE": f"/run/secrets/{SECRET}",
            "GF_PATHS_PROVISIONING": PROVISIONING,
            "GF_USERS_ALLOW_SIGN_UP": "false",
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": f"{DASHBOARDS_DIR}/platform-overview.json",
            # No call home: reporting and update checks reach the internet.
            "GF_ANALYTICS_REPORTING_ENABLED": "false",
            "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
            "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",
        },
        "volumes": ["grafana-data:/var/lib/grafana"],
        "mem_limit": f"{graf.memory_limit_mb}m",
    }


def _checks():
    from shipyard.components.grafana import checks  # pytest and HTTP clients: loaded by `make verify` only

    return checks


COMPONENT = Component(
    name="grafana",
    folder=Path(__file__).parent,
    settings={"grafana": GrafanaSettings},
    uses=("prometheus",),
    # No local recipe: Grafana is not packaged by Debian. `runs` keeps it off under `local`.
    images=(Image("grafana", official=f"grafana/grafana:{VERSION}"),),
    config_dirs=(ConfigDir("grafana", PROVISIONING),),
    services=(
        Service("grafana", "observability", "observability", "grafana", UID, config_dir="grafana",
                port=Port(PORT, "grafana_http", PORT, "loopback port of Grafana's UI (official image source only)"),
                secrets=(SecretFile(SECRET, SECRET, rotation=Rotation(apply=_ROTATE)),),
                health=Health(("wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{PORT}/api/health"),
                              start_period_s=60),
                metrics=Metrics(PORT),
                placement="once", scale=lambda s: 1 if runs(s) else 0),
    ),
    compose_service=compose_service,
    template_context=template_context,
    checks=_checks,
)
