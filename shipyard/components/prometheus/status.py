"""`make status`: on Prometheus's row, the scrape health of the environment — targets up of
those it scrapes, by service, and which are down (asked of Prometheus inside its container)."""

from __future__ import annotations

import json

from shipyard.components.prometheus import PORT


def scrape_health(targets: list[dict]) -> str:
    """/api/v1/targets' active targets as one line: ``5/6 targets up; down: worker 10.0.0.3:9101 (...)``."""
    if not targets:
        return "no target discovered yet"
    by_service: dict[str, list[bool]] = {}
    for t in targets:
        by_service.setdefault(t["labels"].get("service", t["labels"]["job"]), []).append(t["health"] == "up")
    text = f"{sum(t['health'] == 'up' for t in targets)}/{len(targets)} targets up (" + ", ".join(
        f"{name} {sum(ups)}/{len(ups)}" for name, ups in sorted(by_service.items())) + ")"
    down = [f"{t['labels']['job']} {t['labels']['instance']} ({t['health']}: {t['lastError'][:60]})"
            for t in targets if t["health"] != "up"]
    return text + (f"; down: {', '.join(down)}" if down else "")


def describe(settings, containers: dict) -> dict[str, str]:
    out = {}
    for name, container in containers.items():
        if container.status != "running":
            continue
        result = container.exec_run(["wget", "-q", "-O", "-", f"http://127.0.0.1:{PORT}/api/v1/targets?state=active"])
        text = (result.output or b"").decode(errors="replace").strip()
        if result.exit_code != 0:
            out[name] = f"does not answer: {text[-200:]}"
            continue
        out[name] = scrape_health(json.loads(text)["data"]["activeTargets"])
    return out
