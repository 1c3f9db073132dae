"""The task platform's kinds packages (SHIPYARD.app.kinds_packages): checked against the checkout
before any host is touched, hashed into the image (a changed package is a new image, an unchanged
one is not), shipped in the build context's wheelhouse, and named to the API and workers."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from shipyard import image_packages, image_plan, topology
from shipyard.components.taskplatform import kinds_packages
from shipyard.components.taskplatform.settings import DEMO_KINDS_MODULE, DEMO_KINDS_PATH
from shipyard.errors import SettingsError
from shipyard.inventory import load_environment

ONE_HOST = '\n_h = [("@local", {"shipyard_host": "box"})]\nedge = app = data = control = observability = _h\n'
EXAMPLE = "examples/kinds/acme_shop"


def _environment(tmp_path: Path, packages: list | None = None) -> Path:
    app = "" if packages is None else f', "app": {{"kinds_packages": {packages!r}}}'
    (tmp_path / "inventories").mkdir(parents=True, exist_ok=True)
    (tmp_path / "inventories" / "t.py").write_text('SHIPYARD = {"name": "t"' + app + '}' + ONE_HOST)
    return tmp_path


def _problems(tmp_path: Path, packages: list) -> str:
    with pytest.raises(SettingsError) as err:
        load_environment(_environment(tmp_path, packages), "t", {})
    return str(err.value)


def _project(root: Path, entry_point: bool = True, name: str = "team-kinds") -> Path:
    (root / "team_kinds").mkdir(parents=True)
    (root / "team_kinds" / "__init__.py").write_text("# kinds\n")
    points = '[project.entry-points."taskplatform.kinds"]\nteam = "team_kinds"\n' if entry_point else ""
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "1"\n{points}')
    return root


def _wheel(path: Path, entry_point: bool) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("team_kinds/__init__.py", "")
        if entry_point:
            wheel.writestr("team_kinds-1.dist-info/entry_points.txt", "[taskplatform.kinds]\nteam = team_kinds\n")
    return path


def test_the_default_is_the_demo_kinds_package_named_by_module_too(tmp_path):
    settings = load_environment(_environment(tmp_path), "t", {})
    [demo] = settings.app.kinds_packages
    assert Path(demo.path).is_absolute() and (Path(demo.path) / "pyproject.toml").is_file()
    assert kinds_packages.modules_variable(settings) == DEMO_KINDS_MODULE
    # Its pyproject declares the entry point: an image with its wheel finds it with no setting.
    assert image_packages.entry_points(tmp_path, demo)["taskplatform.kinds"] == {"demo": DEMO_KINDS_MODULE}


def test_ci_builds_the_example_package_from_outside_services(repo):
    settings = load_environment(repo, "ci", {})
    paths = [p.path for p in settings.app.kinds_packages]
    assert EXAMPLE in paths and "services/taskplatform_demo_kinds" in paths
    example = settings.app.kinds_packages[paths.index(EXAMPLE)]
    assert example.modules == []  # found by its entry point
    assert image_packages.entry_points(repo, example)["taskplatform.kinds"] == {"acme-shop": "acme_shop"}


def test_a_path_that_is_not_there_names_the_key_and_the_fix(tmp_path):
    text = _problems(tmp_path, [{"path": DEMO_KINDS_PATH}, {"path": "kinds/missing"}])
    assert "inventories/t.py: SHIPYARD.app.kinds_packages.1.path" in text
    assert f"{tmp_path}/kinds/missing is not a directory" in text
    assert "fix: give the directory holding the package's pyproject.toml" in text
    assert "no host was touched" in text


def test_a_directory_without_pyproject_is_not_a_python_project(tmp_path):
    (tmp_path / "kinds").mkdir()
    text = _problems(tmp_path, [{"path": "kinds"}])
    assert "SHIPYARD.app.kinds_packages.0.path" in text and "has no pyproject.toml: not a Python project" in text


def test_a_project_that_names_no_kinds_must_name_its_modules(tmp_path):
    _project(tmp_path / "kinds", entry_point=False)
    text = _problems(tmp_path, [{"path": "kinds"}])
    assert "SHIPYARD.app.kinds_packages.0.path" in text and "names no entry point in the group 'taskplatform.kinds'" in text
    assert "set app.kinds_packages.0.modules" in text
    settings = load_environment(_environment(tmp_path, [{"path": "kinds", "modules": ["team_kinds"]}]), "t", {})
    assert kinds_packages.modules_variable(settings) == "team_kinds"


def test_a_project_with_its_entry_point_needs_no_modules_and_absolute_paths_work(tmp_path):
    root = _project(tmp_path / "elsewhere")
    settings = load_environment(_environment(tmp_path / "repo", [{"path": str(root)}]), "t", {})
    assert kinds_packages.modules_variable(settings) == ""  # the entry points alone, not the services' default


def test_wheels_are_checked_and_their_entry_points_read(tmp_path):
    text = _problems(tmp_path, [{"wheel": "dist/team_kinds-1-py3-none-any.whl"}])
    assert "SHIPYARD.app.kinds_packages.0.wheel" in text and "is not a wheel file (*.whl)" in text
    (tmp_path / "dist").mkdir()
    _wheel(tmp_path / "dist" / "team_kinds-1-py3-none-any.whl", entry_point=False)
    assert "names no entry point" in _problems(tmp_path, [{"wheel": "dist/team_kinds-1-py3-none-any.whl"}])
    _wheel(tmp_path / "dist" / "team_kinds-1-py3-none-any.whl", entry_point=True)
    load_environment(_environment(tmp_path, [{"wheel": "dist/team_kinds-1-py3-none-any.whl"}]), "t", {})


@pytest.mark.parametrize("package, said", [
    ({"requirement": "team-kinds>=1"}, "String should match pattern"),
    ({"path": "a", "wheel": "b.whl"}, "give exactly one of path, wheel, requirement (got path, wheel)"),
    ({}, "give exactly one of path, wheel, requirement (got none)"),
    ({"requirement": "team-kinds==1", "modules": ["team kinds"]}, "String should match pattern"),
], ids=["unpinned", "two-sources", "no-source", "bad-module"])
def test_a_package_is_one_pinned_source(tmp_path, package, said):
    text = _problems(tmp_path, [package])
    assert "SHIPYARD.app.kinds_packages.0" in text and said in text


def test_a_package_given_twice_is_refused(tmp_path):
    _project(tmp_path / "kinds")
    text = _problems(tmp_path, [{"path": "kinds"}, {"requirement": "Team_Kinds==2"}])
    assert "SHIPYARD.app.kinds_packages.1.requirement" in text and "is also given at app.kinds_packages.0.path" in text


def _build(repo: Path, settings) -> image_plan.ImageBuild:
    needed = [(i.component, i.service.image) for i in topology.build(settings).instances if i.service.name == "api"]
    return next(b for b in image_plan.build_plan(repo, settings, needed) if b.wheelhouse)


def test_a_changed_package_is_a_changed_image_and_an_unchanged_one_is_not(repo, tmp_path):
    package = tmp_path / "acme_shop"
    shutil.copytree(repo / EXAMPLE, package, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    demo_only = load_environment(_environment(tmp_path / "env"), "t", {})
    settings = load_environment(_environment(tmp_path / "env", [{"path": DEMO_KINDS_PATH}, {"path": str(package)}]),
                                "t", {})
    before = _build(repo, settings)
    assert before.source_hash != _build(repo, demo_only).source_hash
    # What a build leaves in the project is not the package: same image.
    (package / "build" / "lib").mkdir(parents=True)
    (package / "build" / "lib" / "x.py").write_text("old build output\n")
    (package / "acme_shop.egg-info").mkdir()
    (package / "acme_shop.egg-info" / "PKG-INFO").write_text("x\n")
    (package / "acme_shop" / "__pycache__").mkdir()
    (package / "acme_shop" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert _build(repo, settings).source_hash == before.source_hash
    assert image_plan.versioned_source_hash(repo, settings) == image_plan.versioned_source_hash(repo, settings)
    version = image_plan.versioned_source_hash(repo, settings)
    (package / "acme_shop" / "__init__.py").write_text((package / "acme_shop" / "__init__.py").read_text() + "\n# v2\n")
    assert _build(repo, settings).source_hash != before.source_hash
    assert image_plan.versioned_source_hash(repo, settings) != version


def test_the_demo_kinds_are_no_longer_part_of_the_platforms_own_context(repo):
    settings = load_environment(repo, "ci", {})
    build = _build(repo, settings)
    assert "taskplatform_demo_kinds" not in build.include
    assert "taskplatform_demo_kinds*" in (repo / "services/pyproject.toml").read_text()  # nor of its wheel
    dockerfile = (repo / "services/Dockerfile").read_text()
    assert "/wheelhouse/packages/*.whl" in dockerfile and "--no-index" in dockerfile


def test_the_packages_travel_in_the_build_contexts_wheelhouse(repo, tmp_path):
    from shipyard.apply.image_build import context_tar, wheelhouse_files

    (tmp_path / "packages").mkdir()
    (tmp_path / "pydantic-2-py3-none-any.whl").write_bytes(b"dep")
    (tmp_path / "packages" / "acme_shop_kinds-1.0.0-py3-none-any.whl").write_bytes(b"kinds")
    files = wheelhouse_files(tmp_path)
    assert files == {"wheelhouse/pydantic-2-py3-none-any.whl": b"dep",
                     "wheelhouse/packages/acme_shop_kinds-1.0.0-py3-none-any.whl": b"kinds"}
    build = _build(repo, load_environment(repo, "ci", {}))
    with tarfile.open(fileobj=io.BytesIO(context_tar(repo / build.context, build.include, files))) as tar:
        assert "wheelhouse/packages/acme_shop_kinds-1.0.0-py3-none-any.whl" in tar.getnames()


def test_the_wheelhouse_knows_the_packages_and_fetches_their_dependencies_offline_for_the_image(repo, tmp_path):
    settings = load_environment(repo, "ci", {})
    [wanted] = image_plan.wheelhouse_requirements(repo, settings)
    # The Python client first (tests/unit/test_client_in_image.py), then the kinds packages.
    assert [p.path for p in wanted.packages] == ["clients/python", *(p.path for p in settings.app.kinds_packages)]
    assert image_plan.wheelhouse_requirements(repo)[0].packages == ()
    constraints = image_plan.constraints_text("# pins\nuvicorn[standard]==0.54.0  # server\npydantic==2.14.3\n\n")
    assert constraints == "uvicorn==0.54.0\npydantic==2.14.3\n"  # pip refuses extras in constraints
    argv = image_plan.package_dependencies_argv("/usr/bin/python3", [tmp_path / "a.whl"], tmp_path / "c.txt",
                                                tmp_path / "wh", tmp_path / "wh", "x86_64")
    assert argv[3] == "download" and argv[argv.index("-c") + 1] == str(tmp_path / "c.txt")
    assert argv[argv.index("--python-version") + 1] == "3.11" and str(tmp_path / "a.whl") in argv
    assert argv[argv.index("--find-links") + 1] == str(tmp_path / "wh")  # a package may depend on taskplatform
    pinned = image_plan.package_download_argv("/usr/bin/python3", "team-kinds==1", tmp_path, "x86_64")
    assert "--no-deps" in pinned and "team-kinds==1" in pinned and "-r" not in pinned


def test_the_api_and_workers_are_told_the_modules(repo):
    # The committed render (tests/unit/test_render.py keeps it current): api and worker, each colour
    # (and migrate, which has the same environment).
    compose = (repo / "compose/ci/ci/compose.yaml").read_text()
    assert compose.count("TASKS_KINDS_PACKAGES: taskplatform_demo_kinds") >= 4


def test_a_releases_default_version_follows_a_package_git_does_not_hold(repo, tmp_path):
    from shipyard.cli import default_version

    package = tmp_path / "acme_shop"
    shutil.copytree(repo / EXAMPLE, package, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    settings = load_environment(_environment(tmp_path / "env", [{"path": DEMO_KINDS_PATH}, {"path": str(package)}]),
                                "t", {})
    first = default_version(settings)
    commit = first.split("-", 1)[0]
    assert first.startswith(commit + "-") and first == default_version(settings)  # same content, same version
    (package / "acme_shop" / "extra.py").write_text("X = 1\n")
    second = default_version(settings)
    assert second.startswith(commit + "-") and second != first
