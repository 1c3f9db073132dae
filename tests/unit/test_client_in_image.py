"""The official Python client (clients/python) in the task platform's image: the release's smoke
test (`taskplatform smoke`, services/taskplatform/release_smoke.py) calls the API through it.
Its wheel travels in the build context's wheelhouse like a kinds package, installed offline with
its dependencies held to the platform's pins; its files are in the image's source hash and a
release's default version, so a changed client is a new image. No image is built here (the
build's own check is the lead's deploy); what goes into the context is."""

from __future__ import annotations

import io
import re
import shutil
import tarfile
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from shipyard import image_packages, image_plan, topology
from shipyard.components.taskplatform import CLIENT_PACKAGE
from shipyard.inventory import load_environment

ONE_HOST = '\n_h = [("@local", {"shipyard_host": "box"})]\nedge = app = data = control = observability = _h\n'


def _pins(requirements: Path) -> dict[str, str]:
    """name (canonical) → pinned version, of a requirements file's ``name[extras]==version`` lines."""
    pins = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            requirement = Requirement(line)
            pins[re.sub(r"[-_.]+", "-", requirement.name).lower()] = str(requirement.specifier).removeprefix("==")
    return pins


def _copy_of_repo(repo: Path, root: Path) -> Path:
    """What the image is made of, copied: the build context and the client (the demo kinds are
    in services/, the default kinds package)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache")
    shutil.copytree(repo / "services", root / "services", ignore=ignore)
    shutil.copytree(repo / "clients" / "python", root / "clients" / "python", ignore=ignore)
    (root / "inventories").mkdir()
    (root / "inventories" / "t.py").write_text('SHIPYARD = {"name": "t", "app": {"kinds_packages": '
                                               '[{"path": "services/taskplatform_demo_kinds"}]}}' + ONE_HOST)
    return root


def _app_build(repo: Path, settings) -> image_plan.ImageBuild:
    needed = [(i.component, i.service.image) for i in topology.build(settings).instances if i.service.name == "api"]
    return next(b for b in image_plan.build_plan(repo, settings, needed) if b.wheelhouse)


def test_every_environment_installs_the_client_in_the_platform_image(repo):
    for env in ("local", "ci"):
        settings = load_environment(repo, env, {})
        [wanted] = image_plan.wheelhouse_requirements(repo, settings)
        assert wanted.packages[0] == CLIENT_PACKAGE, env
        assert image_plan.versioned_packages(settings)[0] == CLIENT_PACKAGE, env  # in a release's default version
    project = tomllib.loads((repo / CLIENT_PACKAGE.path / "pyproject.toml").read_text())["project"]
    assert project["name"] == "shipyard-tasks-client"
    assert image_packages.problems(repo, [CLIENT_PACKAGE], "client") == []  # buildable from this checkout


def test_the_clients_dependencies_are_pinned_by_the_platform_and_fit_its_ranges(repo):
    """The wheelhouse fetches the client's dependencies held to services/requirements.txt: each
    must be pinned there (else a deploy would take whatever the index has that day) at a version
    the client accepts, and so must httpx's own httpcore."""
    pins = _pins(repo / "services" / "requirements.txt")
    project = tomllib.loads((repo / CLIENT_PACKAGE.path / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(text) for text in project["dependencies"]]
    # httpx's own needs, from the installed distribution of the pinned version (the tests' venv)
    assert metadata.version("httpx") == pins["httpx"]
    wanted += [Requirement(text) for text in metadata.requires("httpx") if text.startswith("httpcore")]
    assert {r.name for r in wanted} >= {"httpx", "pydantic", "httpcore"}
    for requirement in wanted:
        assert requirement.name in pins, f"{requirement.name} is not pinned in services/requirements.txt"
        assert requirement.specifier.contains(pins[requirement.name]), (requirement, pins[requirement.name])


def test_a_changed_client_is_a_changed_image_and_release_version(repo, tmp_path):
    root = _copy_of_repo(repo, tmp_path / "repo")
    settings = load_environment(root, "t", {})
    before, version = _app_build(root, settings).source_hash, image_plan.versioned_source_hash(root, settings)
    # What a build leaves in the project is not the client: the same image.
    (root / "clients/python/build/lib").mkdir(parents=True)
    (root / "clients/python/build/lib/x.py").write_text("old build output\n")
    (root / "clients/python/shipyard_tasks/__pycache__").mkdir()
    (root / "clients/python/shipyard_tasks/__pycache__/x.cpython-311.pyc").write_bytes(b"\0")
    assert _app_build(root, settings).source_hash == before
    client = root / "clients/python/shipyard_tasks/waiting.py"
    client.write_text(client.read_text() + "\n# a changed wait\n")
    assert _app_build(root, settings).source_hash != before
    assert image_plan.versioned_source_hash(root, settings) != version


def test_the_client_wheel_travels_in_the_context_and_the_dockerfile_installs_it_offline(repo, tmp_path):
    from shipyard.apply.image_build import context_tar, wheelhouse_files

    (tmp_path / "packages").mkdir()
    (tmp_path / "httpx-0.28.1-py3-none-any.whl").write_bytes(b"dep")
    (tmp_path / "packages" / "shipyard_tasks_client-0.1.0-py3-none-any.whl").write_bytes(b"client")
    build = _app_build(repo, load_environment(repo, "ci", {}))
    files = wheelhouse_files(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(context_tar(repo / build.context, build.include, files))) as tar:
        names = tar.getnames()
    assert {"wheelhouse/packages/shipyard_tasks_client-0.1.0-py3-none-any.whl",
            "wheelhouse/httpx-0.28.1-py3-none-any.whl", "requirements.txt", "Dockerfile"} <= set(names)
    dockerfile = (repo / "services" / "Dockerfile").read_text()
    # The packages (the client among them) with their dependencies, from the wheelhouse alone.
    assert re.search(r"pip install --quiet --no-index --find-links /wheelhouse /wheelhouse/packages/\*\.whl",
                     dockerfile)
    assert "taskplatform/release_smoke.py" in names  # the smoke test that imports the client
