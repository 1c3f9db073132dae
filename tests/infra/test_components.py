"""Each registered component's own checks (``shipyard/components/<name>/checks.py``), collected
here from the registry: a new component's checks run without touching this file."""

from __future__ import annotations

from shipyard.components import COMPONENTS

for _component in COMPONENTS:
    if not _component.checks:
        continue
    _module = _component.checks()
    for _name, _value in vars(_module).items():
        if _name.startswith("_") or not callable(_value) or getattr(_value, "__module__", None) != _module.__name__:
            continue
        # Tests and fixtures alike, prefixed with the component so two components' names never clash
        # (fixtures keep their names: tests ask for them by name).
        if _name.startswith("test_"):
            globals()[f"test_{_component.name}__{_name[5:]}"] = _value
        else:
            globals()[_name] = _value
