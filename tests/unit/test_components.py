"""The component model: the registry is consistent, the core names no component, and a new
component is its own folder plus one registry line."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.component import EVERY_HOST, TIERS
from shipyard.components import COMPONENTS
from shipyard.inventory import ROLES, load_environment
from shipyard.render import render_environment

REPO = Path(__file__).resolve().parents[2]
# The core: what iterates components — everything but the components' own folders (cli.py too:
# the components' commands come from the registry).
CORE = sorted([*REPO.glob("shipyard/*.py"), *REPO.glob("shipyard/render/*.py"), *REPO.glob("shipyard/apply/*.py"),
               *REPO.glob("shipyard/controller/*.py"), REPO / "deploy.py"])


def test_names_config_dirs_and_settings_sections_are_unique():
    services = [s.name for c in COMPONENTS for s in c.services]
    assert len(services) == len(set(services))
    dirs = [d.name for c in COMPONENTS for d in c.config_dirs]
    assert len(dirs) == len(set(dirs))
    sections = [k for c in COMPONENTS for k in c.settings]
    assert len(sections) == len(set(sections))


def test_every_service_refers_to_what_its_component_declares():
    for comp in COMPONENTS:
        images = {i.key for i in comp.images}
        dirs = {d.name for d in comp.config_dirs}
        for svc in comp.services:
            assert svc.image in images, (comp.name, svc.name)
            assert svc.config_dir is None or svc.config_dir in dirs, (comp.name, svc.name)
            assert svc.tier in TIERS and (svc.group in ROLES or svc.group == EVERY_HOST), (comp.name, svc.name)
            for wait in svc.waits:
                comp.service(wait.service)
            for secret in svc.secrets:
                assert secret.template is None or (comp.templates_dir / secret.template).is_file()
        for used in comp.uses:
            assert used in {c.name for c in COMPONENTS}, (comp.name, used)
        for image in comp.images:
            for context in (image.local_context, image.build_context):
                assert context is None or (REPO / context / "Dockerfile").is_file(), (comp.name, context)
        if comp.checks:  # a callable that loads the module of checks from the component's folder
            assert Path(comp.checks().__file__).parent == comp.folder, comp.name


def test_the_core_names_no_component():
    names = {c.name for c in COMPONENTS} | {s.name for c in COMPONENTS for s in c.services}
    names -= set(TIERS) | set(ROLES)  # tiers and host groups are the core's own words
    quoted = re.compile(r"[\"'](" + "|".join(sorted(names)) + r")(?:-[0-9]+)?[\"']")
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}" for path in CORE
             for n, line in enumerate(path.read_text().splitlines(), 1) if quoted.search(line)]
    assert not found, "component names in core code:\n" + "\n".join(found)


def component_imports(path: Path) -> list[str]:
    """The modules of one component a file imports (``shipyard.components.<name>[.x]``), read
    from its syntax tree: lazy imports inside functions count too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        found += [m for m in modules if m.startswith("shipyard.components.") and m.split(".")[2] in COMPONENT_FOLDERS]
    return found


# Every component's folder (the registry itself, shipyard.components.COMPONENTS, is the core's way in).
COMPONENT_FOLDERS = {p.name for p in (REPO / "shipyard/components").iterdir() if (p / "__init__.py").is_file()}


def test_the_core_imports_no_component():
    found = [f"{path.relative_to(REPO)}: imports {m}" for path in CORE for m in component_imports(path)]
    assert not found, "the core imports components (go through shipyard.components.COMPONENTS):\n" + "\n".join(found)


def test_the_import_check_sees_lazy_imports(tmp_path):
    sample = tmp_path / "cli.py"
    sample.write_text("def pg():\n    from shipyard.components.postgres.patroni_api import Cluster\n"
                      "from shipyard.components import redis\n")
    assert sorted(component_imports(sample)) == ["shipyard.components.postgres.patroni_api",
                                         "shipyard.components.postgres.patroni_api.Cluster",
                                         "shipyard.components.redis"]


_WITH_FIXTURE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import shipyard.components as registry
from memcached import COMPONENT
registry.COMPONENTS = registry.COMPONENTS + (COMPONENT,)  # the one registry line
from pathlib import Path
from shipyard.inventory import load_environment
from shipyard.render import render_environment
settings = load_environment(Path(sys.argv[2]), "production", {"SHIPYARD_MEMCACHED__MEMORY_MB": "96",
                                                           "SHIPYARD_PORTS__MEMCACHED": "11311"})
out = {}
for host, rendered in render_environment(settings).items():
    out[host] = {"compose": rendered.compose, "files": {k: v.decode() for k, v in rendered.files.items()},
                 "static": sorted(rendered.static)}
print(json.dumps(out))
"""


def test_a_component_from_a_fixture_folder_renders_with_no_core_change():
    fixtures = REPO / "tests/unit/fixtures/components"
    result = subprocess.run([sys.executable, "-c", _WITH_FIXTURE, str(fixtures), str(REPO)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    hosts = json.loads(result.stdout)
    data = hosts["data-1"]
    service = data["compose"]["services"]["memcached"]
    # Its settings section and its port setting exist, validated like any other.
    assert service["environment"]["MEMCACHED_MEMORY_MB"] == "96"
    assert service["ports"] == ["127.0.0.1:11311:11211"]  # no consumer elsewhere: loopback only
    assert service["image"] == "registry.internal.example:5000/library/memcached:1.6-bookworm"
    assert service["labels"]["org.shipyard.component"] == "memcached"
    assert "./memcached:/etc/memcached:ro" in service["volumes"]
    assert service["healthcheck"]["test"][-2:] == ["sh", "/etc/memcached/health.sh"]
    # Its template is rendered and committed, its static files shipped beside it.
    assert data["files"]["memcached/memcached.conf"] == "# memcached for production\n-m 96\n"
    assert [f for f in data["static"] if f.startswith("memcached/")] == ["memcached/health.sh", "memcached/start.sh"]
    # Only the data host runs it.
    assert all("memcached" not in h["compose"]["services"] for name, h in hosts.items() if name != "data-1")


# Stands in for `python -m shipyard` (the Makefile's $(PY) -m shipyard): the CLI with the fixture
# component registered, as its one registry line would.
_CLI_WITH_FIXTURE = """
import sys
sys.path[:0] = [{repo!r}, {fixtures!r}]
import shipyard.components as registry
from memcached import COMPONENT
registry.COMPONENTS = registry.COMPONENTS + (COMPONENT,)
from shipyard.cli import main
args = sys.argv[1:]
sys.exit(main(args[2:] if args[:2] == ["-m", "shipyard"] else args))
"""


def test_a_components_command_reaches_make_help_and_make_with_no_core_or_makefile_change(tmp_path):
    python = tmp_path / "python-with-fixture"
    script = tmp_path / "cli.py"
    script.write_text(_CLI_WITH_FIXTURE.format(repo=str(REPO), fixtures=str(REPO / "tests/unit/fixtures/components")))
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    python.chmod(0o755)
    make = ["make", "--no-print-directory", "-C", str(REPO), f"PY={python}"]
    listed = subprocess.run([*make, "help"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "make memcached-flush ENV=name [PREFIX=sessions:]" in listed.stdout
    assert "drop the cached entries" in listed.stdout
    ran = subprocess.run([*make, "memcached-flush", "ENV=production", "PREFIX=sessions:",
                          "SHIPYARD_MEMCACHED__MEMORY_MB=96"], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().endswith("production: would flush sessions: of memcached (96 MB) on data-1")
    unknown = subprocess.run([*make, "memcached-flsh", "ENV=production"], capture_output=True, text=True)
    assert unknown.returncode != 0 and "make memcached-flsh: no such target" in unknown.stderr


def test_an_unknown_setting_of_a_component_section_names_the_key(repo):
    from shipyard.errors import SettingsError

    with pytest.raises(SettingsError) as err:
        load_environment(repo, "ci", {"SHIPYARD_POSTGRES__REPLICA": "2"})
    assert "SHIPYARD_POSTGRES__REPLICA" in str(err.value)


def test_site_template_override_wins_over_the_components_own(repo, tmp_path):
    from shipyard.components import component_named
    from shipyard.render.templates import render_template

    comp = component_named("edge")
    (tmp_path / "edge" / "nginx").mkdir(parents=True)
    (tmp_path / "edge" / "nginx" / "nginx.conf.j2").write_text("# site nginx for {{ env }}\n")
    text = render_template("edge", comp.templates_dir, "nginx/nginx.conf.j2", {"env": "x"}, site_root=tmp_path)
    assert text == "# site nginx for x\n"
    own = render_template("edge", comp.templates_dir, "nginx/nginx.conf.j2",
                          {"env": "x", "api_colours": {}, "api_by_name": True, "api_port": 8000, "conf": "/c",
                           "routing": "/r", "preview_port": 8081, "router_port": 8080, "status_port": 8090,
                           "network": "10.0.0.0/24", "tls": False, "tls_mode": "off", "redirect": False,
                           "hsts_max_age_s": 63072000, "https_authority_port": "", "cert_file": "/s/c", "key_file": "/s/k",
                           "uncompressed": "^/x", "docs_path": "/docs", "docs_csp": "x", "api_csp": "y"},
                          site_root=tmp_path / "none")
    assert own.startswith("# Rendered by Shipyard for environment x")


def test_every_environment_renders(repo):
    for env in ("local", "ci", "production"):
        assert render_environment(load_environment(repo, env, {}))
