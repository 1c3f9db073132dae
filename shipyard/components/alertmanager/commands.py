"""Alertmanager's operator command: `make alerts ENV=..` — what fires now, as the environment's
Alertmanager holds it (its API on the published loopback port), with what silences or inhibits
each alert."""

from __future__ import annotations

from shipyard.component import Command, CommandContext


def alerts_table(alerts: list[dict]) -> str:
    """Alertmanager's /api/v2/alerts as a table: critical first, then by name and host."""
    rows = [("alert", "severity", "host", "target", "since", "state", "summary")]
    order = {"critical": 0, "warning": 1}
    for alert in sorted(alerts, key=lambda a: (order.get(a["labels"].get("severity"), 2), a["labels"]["alertname"],
                                              a["labels"].get("host", ""), a["labels"].get("instance", ""))):
        labels, status = alert["labels"], alert["status"]
        state = status["state"]
        if status.get("inhibitedBy"):
            state += " (inhibited)"
        if status.get("silencedBy"):
            state += " (silenced)"
        target = " ".join(p for p in (labels.get("job", ""), labels.get("instance", "")) if p)
        rows.append((labels["alertname"], labels.get("severity", ""), labels.get("host", ""), target,
                     alert["startsAt"][:19].replace("T", " "), state, alert.get("annotations", {}).get("summary", "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in rows)


def _alerts(ctx: CommandContext) -> int:
    import requests

    from shipyard import topology
    from shipyard.errors import ShipyardError

    topo = topology.build(ctx.settings)
    managers = topo.instances_of("alertmanager", "alertmanager")
    bound = topo.binding(managers[0]) if managers else None
    if bound is None:
        raise ShipyardError(f"environment {ctx.settings.name}", "no Alertmanager is published",
                            "set alertmanager.enabled and ports.alertmanager_http in the inventory")
    base = f"http://{'127.0.0.1' if bound[0] == '0.0.0.0' else bound[0]}:{bound[1]}"
    try:
        answer = requests.get(f"{base}/api/v2/alerts", timeout=5)
        answer.raise_for_status()
    except requests.RequestException as exc:
        raise ShipyardError(f"Alertmanager of {ctx.settings.name} ({base})", f"no answer ({type(exc).__name__})",
                            f"check that it runs: make status ENV={ctx.settings.name}") from None
    alerts = answer.json()
    print(alerts_table(alerts) if alerts else f"{ctx.settings.name}: no alert fires")
    return 0


COMMANDS = (
    Command("alerts", "what fires now, from the environment's Alertmanager (with what inhibits or silences it)",
            _alerts),
)
