"""shipyard.controller.views: what `make status` prints when a component's containers cannot be asked."""

from types import SimpleNamespace

import docker.errors
import pytest

from shipyard.controller.views import described


def _component(describe):
    return SimpleNamespace(name="taskplatform", describe=describe)


def test_a_component_s_text_per_container_is_passed_on():
    roles, unanswered = described(_component(lambda settings, running: {"worker-blue": "queue: 0 queued"}), None, {})
    assert (roles, unanswered) == ({"worker-blue": "queue: 0 queued"}, None)


def test_a_component_without_a_description_has_none_and_no_complaint():
    assert described(_component(None), None, {}) == ({}, None)


@pytest.mark.parametrize("error", [
    docker.errors.APIError("409 Client Error: Conflict (\"Container abc is restarting, wait until the container is running\")"),
    docker.errors.NotFound("No such container: abc"),
])
def test_a_container_that_went_or_restarted_since_it_was_listed_leaves_the_view_whole(error):
    def describe(settings, running):
        raise error

    roles, unanswered = described(_component(describe), None, {"api-blue": object()})
    assert roles == {}
    assert "taskplatform" in unanswered and str(error) in unanswered and "make status" in unanswered


def test_a_defect_in_a_description_is_not_hidden():
    def describe(settings, running):
        raise KeyError("Config")

    with pytest.raises(KeyError):
        described(_component(describe), None, {})
