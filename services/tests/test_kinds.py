"""The kinds registry without any server: how a kind is declared, and how a package that cannot
be loaded says so (which package, named where, what to do)."""

import textwrap

import pytest
from pydantic import BaseModel

from taskplatform import kinds
from taskplatform.kinds import KindError, kind


class Empty(BaseModel):
    pass


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Kinds declared by a test go away with it (the process's own, loaded first, stay)."""
    kinds.registry()
    monkeypatch.setattr(kinds, "_declared", dict(kinds._declared))


def package(tmp_path, monkeypatch, name: str, source: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_plain_function_runs_in_a_thread_an_async_one_in_the_loop():
    @kind("t-plain", payload=Empty)
    def plain(payload):
        return {}

    @kind("t-async", payload=None)
    async def asynchronous(payload, context):
        return {}

    assert kinds._declared["t-plain"].sync == "thread" and not kinds._declared["t-plain"].takes_context
    assert kinds._declared["t-async"].sync is None and kinds._declared["t-async"].takes_context


@pytest.mark.parametrize("declare, message", [
    (lambda: kind("Bad Name", payload=None), "a name is 1-64 of a-z, 0-9, '_' and '-'"),
    (lambda: kind("t-x", payload=dict), "payload= must be a pydantic model class"),
    (lambda: kind("t-x", payload=None, sync="process")(_coroutine), "is async and runs in the event loop"),
])
def test_a_wrong_declaration_says_what_to_change(declare, message):
    with pytest.raises(KindError, match=message):
        declare()


async def _coroutine(payload):
    return {}


def test_a_name_declared_by_two_packages_stops_the_load_naming_both(tmp_path, monkeypatch):
    source = """
        from taskplatform.kinds import kind

        @kind("t-twice", payload=None)
        def work(payload):
            return {}
    """
    first, second = package(tmp_path, monkeypatch, "team_a", source), package(tmp_path, monkeypatch, "team_b", source)
    with pytest.raises(KindError, match="declared twice: by team_a.work and by team_b.work; rename one"):
        kinds.load(f"{first},{second}")


def test_a_package_that_cannot_be_imported_or_declares_nothing_is_named(tmp_path, monkeypatch):
    with pytest.raises(KindError, match=r"'no_such_kinds' \(from TASKS_KINDS_PACKAGES\) cannot be imported"):
        kinds.load("no_such_kinds")
    empty = package(tmp_path, monkeypatch, "team_empty", "X = 1\n")
    with pytest.raises(KindError, match=r"'team_empty' \(from TASKS_KINDS_PACKAGES\) declares no task kind"):
        kinds.load(empty)


def test_the_platforms_smoke_kind_is_there_whatever_the_setting():
    assert "smoke" in kinds.load("")


def test_a_result_must_be_a_json_object_or_a_model():
    declared = kinds.Kind("t-r", _coroutine, None, None, "default", None, False)
    assert kinds.result_json(declared, None) == {}
    assert kinds.result_json(declared, Empty()) == {}
    for bad, problem in ((3, "returned int"), ({"x": float("nan")}, "not JSON"), ({"x": object()}, "not JSON"),
                         ({"x": "a\x00"}, "NUL")):
        with pytest.raises(kinds.TaskFailed, match=problem):
            kinds.result_json(declared, bad)
