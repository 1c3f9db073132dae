"""Alertmanager: receives the alerts Prometheus fires and delivers them (webhooks, email) with
the routes, grouping and inhibitions below, all from ``SHIPYARD.alertmanager``.

One instance per environment, on the observability group's first host; its clustering is off
(``--cluster.listen-address=``: no gossip port). Its state (silences, notification log) lives
in a named volume. Images: ``local`` builds Debian bookworm's prometheus-alertmanager 0.25
(amtool inside); ``official`` is prom/alertmanager at the same version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


from shipyard import yamltext
from shipyard.component import Component, ConfigDir, Health, Image, Metrics, Port, Service
from shipyard.components.alertmanager.commands import COMMANDS
from shipyard.components.alertmanager.settings import AlertmanagerSettings

UID = 65534  # nobody, as in the official image
CONF = "/etc/alertmanager"
PORT = 9093
VERSION = "0.25.0"

# Receivers by what the alert asks of people: "page" (severity critical: someone acts now),
# "notify" (the rest). Both send to every configured destination today; a site splits them
# by giving each its own list when it needs to.
PAGE, NOTIFY = "page", "notify"
# Labels that make alerts "the same problem" for one notification.
GROUP_BY = ("env", "alertname", "host")


def _destinations(am: AlertmanagerSettings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if am.webhook_urls:
        out["webhook_configs"] = [{"url": url, "send_resolved": True} for url in am.webhook_urls]
    if am.email_to:
        out["email_configs"] = [{"to": to, "from": am.email_from, "smarthost": am.smarthost, "send_resolved": True}
                                for to in am.email_to]
    return out


def config(am: AlertmanagerSettings) -> dict[str, Any]:
    """alertmanager.yml as data (dumped to YAML: always valid, whatever the settings hold)."""
    destinations = _destinations(am)
    return {
        "route": {
            "receiver": NOTIFY,
            "group_by": list(GROUP_BY),
            "group_wait": f"{am.group_wait_s}s",
            "group_interval": f"{am.group_interval_s}s",
            "repeat_interval": f"{am.repeat_interval_s}s",
            "routes": [{"receiver": PAGE, "matchers": ['severity="critical"']}],
        },
        # No destination configured: the alerts are still held and shown (make alerts), not sent.
        "receivers": [{"name": PAGE, **destinations}, {"name": NOTIFY, **destinations}],
        "inhibit_rules": [
            # A host whose every target is down: its containers' alerts are consequences.
            {"source_matchers": ['alertname="HostDown"'], "target_matchers": ['alertname!="HostDown"'],
             "equal": ["env", "host"]},
            # A target that is down: what else it would say (config, errors) is unknown, not firing.
            {"source_matchers": ['alertname="TargetDown"'],
             "target_matchers": ['alertname!="TargetDown"', 'alertname!="HostDown"'],
             "equal": ["env", "host", "job", "instance"]},
        ],
    }


def template_context(ctx) -> dict[str, Any]:
    text = yamltext.dump(config(ctx.section("alertmanager")))
    return {"env": ctx.env, "config_yaml": text}


def compose_service(ctx, inst) -> dict[str, Any]:
    am = ctx.section("alertmanager")
    return {
        "command": [f"--config.file={CONF}/alertmanager.yml", "--storage.path=/alertmanager",
                    f"--web.listen-address=:{PORT}",
                    # One instance: no cluster, so no gossip port is opened.
                    "--cluster.listen-address="],
        "volumes": ["alertmanager-data:/alertmanager"],
        "mem_limit": f"{am.memory_limit_mb}m",
    }


def _checks():
    from shipyard.components.alertmanager import checks  # pytest and HTTP clients: loaded by `make verify` only

    return checks


COMPONENT = Component(
    name="alertmanager",
    folder=Path(__file__).parent,
    settings={"alertmanager": AlertmanagerSettings},
    images=(Image("alertmanager", official=f"prom/alertmanager:v{VERSION}", local="shipyard/alertmanager:0.25",
                  local_context="shipyard/components/alertmanager/image"),),
    config_dirs=(ConfigDir("alertmanager", CONF),),
    services=(
        Service("alertmanager", "observability", "observability", "alertmanager", UID, config_dir="alertmanager",
                port=Port(PORT, "alertmanager_http", PORT, "loopback port of Alertmanager's API (make alerts)"),
                health=Health(("wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{PORT}/-/ready"),
                              start_period_s=30),
                metrics=Metrics(PORT),
                placement="once", scale=lambda s: 1 if s.alertmanager.enabled else 0),
    ),
    compose_service=compose_service,
    template_context=template_context,
    checks=_checks,
    commands=COMMANDS,
)
