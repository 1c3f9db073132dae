"""Errors a user can act on: raised as ShipyardError (where, what, fix), never as an assert,
which `python -O` removes and which says neither where nor what to do."""

import ast
import dataclasses
from pathlib import Path

import pytest

from shipyard import image_plan
from shipyard.component import Image
from shipyard.components import COMPONENTS
from shipyard.errors import RolloutError, ShipyardError
from shipyard.inventory import load_environment
from shipyard.bluegreen import ReleaseState



def _runtime_modules(repo: Path) -> list[Path]:
    files = [repo / "deploy.py", *sorted((repo / "shipyard").rglob("*.py")),
             *sorted((repo / "services" / "taskplatform").rglob("*.py"))]
    # A component's checks.py is testinfra checks (`make verify`): its asserts are the tests.
    return [f for f in files if f.name != "checks.py"]


def test_no_assert_guards_at_run_time(repo):
    found = [f"{path.relative_to(repo)}:{node.lineno}" for path in _runtime_modules(repo)
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
    assert not found, f"assert used as a runtime guard (raise a ShipyardError: where, what, fix): {found}"


def test_a_deploy_goes_on_only_with_the_release_state_its_release_wrote():
    from shipyard.apply.releasestate import check_release_start

    starting = ReleaseState.initial("1").starting_release("2")
    check_release_start(starting, "green", "host h: /opt/shipyard/.ci.release/state.json")
    with pytest.raises(RolloutError) as err:
        check_release_start(ReleaseState.initial("1"), "green", "host h: /opt/shipyard/.ci.release/state.json")
    assert err.value.where == "host h: /opt/shipyard/.ci.release/state.json"
    assert "does not start green (it holds no release starting, blue live)" in err.value.what
    assert "run the release again" in err.value.fix


@pytest.mark.parametrize("source,image", [("local", Image("solo", official="example/solo:1")),
                                          ("official", Image("solo", local="shipyard/solo", local_context="x"))])
def test_an_image_without_a_recipe_for_the_source_says_which_setting_and_what_to_do(repo, monkeypatch, source, image):
    settings = load_environment(repo, "ci", {"SHIPYARD_IMAGES__SOURCE": source})
    comp = dataclasses.replace(next(c for c in COMPONENTS if c.name == "redis"), images=(image,))
    with pytest.raises(ShipyardError) as err:
        image_plan.image_ref(settings, comp, "solo")
    assert err.value.where == f"images.source '{source}': component redis, image solo"
    recipe = "local recipe" if source == "local" else "official ref"
    assert err.value.what == f"the image has no {recipe} to run under this source"
    assert f"set images.source to '{'official' if source == 'local' else 'local'}'" in err.value.fix
    if source == "local":  # the build plan asks the same question
        monkeypatch.setattr(image_plan, "COMPONENTS", (comp,))
        with pytest.raises(ShipyardError, match="has no local recipe"):
            image_plan.build_plan(repo, settings, [(comp, "solo")])


def test_every_error_class_is_raised_somewhere(repo):
    """An error class nothing raises misleads a reader about what can fail (RolloutError was one)."""
    import inspect

    from shipyard import errors

    sources = "\n".join(path.read_text() for path in [repo / "deploy.py", *(repo / "shipyard").rglob("*.py")])
    classes = [name for name, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, errors.ShipyardError) and cls is not errors.ShipyardError]
    assert classes and not [name for name in classes if f"raise {name}(" not in sources]
