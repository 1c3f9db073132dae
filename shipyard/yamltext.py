"""YAML text of the rendered configs (compose files, Prometheus, Alertmanager, Grafana,
Logstash/Elasticsearch settings): block style, keys in the given order, lines up to 120, no
anchors (shared sub-dicts written out in full: anchors make a rendered file harder to review).
libyaml's emitter when PyYAML has it — the same text for ~5x less CPU (a deploy renders every
host before pyinfra and each again inside it) — else PyYAML's own."""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    def ignore_aliases(self, data):  # noqa: D401
        return True


def dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
