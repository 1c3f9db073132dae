"""One home for each kind of work, held by the imports: the pure core (settings, topology,
render, plan, image planning, the release model) imports no pyinfra, docker SDK, subprocess or
HTTP client; ``apply/`` is pyinfra's (host side) and drives no container through the docker SDK;
``controller/`` is the docker SDK's (controller side), its views reading through ``HostView``
only; and nothing lower imports anything higher."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPYARD = REPO / "shipyard"
CORE = sorted({*SHIPYARD.glob("*.py"), *SHIPYARD.glob("render/*.py")} - {SHIPYARD / "cli.py", SHIPYARD / "__main__.py"})
APPLY = sorted(SHIPYARD.glob("apply/*.py"))
CONTROLLER = sorted(SHIPYARD.glob("controller/*.py"))
SIDE_EFFECTS = ("pyinfra", "docker", "subprocess", "requests", "socket")


def imports(path: Path) -> set[str]:
    """Every module a file imports, lazy imports in functions included, with the imported names
    (``from a import b`` → ``a`` and ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def _under(module: str, *tops: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in tops)


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(REPO)))
def test_the_core_is_pure_and_imports_nothing_above_it(path):
    found = imports(path)
    assert not [m for m in found if _under(m, *SIDE_EFFECTS)], f"{path.name}: side effects belong in apply/ or controller/"
    assert not [m for m in found if _under(m, "shipyard.apply", "shipyard.controller", "shipyard.cli")]


@pytest.mark.parametrize("path", APPLY, ids=lambda p: str(p.relative_to(REPO)))
def test_apply_holds_pyinfra_operations_and_no_controller_side_work(path):
    found = imports(path)
    assert not [m for m in found if _under(m, "docker", "shipyard.controller", "shipyard.cli")], path.name


@pytest.mark.parametrize("path", CONTROLLER, ids=lambda p: str(p.relative_to(REPO)))
def test_the_controller_never_imports_pyinfra(path):
    assert not [m for m in imports(path) if _under(m, "pyinfra", "shipyard.apply", "shipyard.cli")], path.name


def test_the_views_read_through_the_read_only_face():
    views = imports(SHIPYARD / "controller/views.py")
    assert "shipyard.controller.hosts.HostView" in views
    assert "shipyard.controller.hosts.HostControl" not in views
    source = (SHIPYARD / "controller/hosts.py").read_text()
    view = source[source.index("class HostView"):source.index("class HostControl")]
    for change in (".stop(", ".start(", ".remove(", ".kill(", ".containers.run(", ".exec_run("):
        assert change not in view, f"HostView calls {change}: changes go in HostControl"


def test_make_status_loads_no_pyinfra():
    probe = "import sys, shipyard.cli, shipyard.controller.views; print('pyinfra' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_layer_check_sees_a_lazy_import(tmp_path):
    sample = tmp_path / "plan.py"
    sample.write_text("def f():\n    import subprocess\n    from shipyard.controller import hosts\n")
    assert {"subprocess", "shipyard.controller", "shipyard.controller.hosts"} <= imports(sample)
