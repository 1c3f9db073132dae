"""shipyard.controller.teardown: `compose down` that fails only on a network the engine still
counts an endpoint on (nothing attached) is done; any other failure stays a failure."""

from __future__ import annotations

import json
import subprocess

import pytest

from shipyard.controller import teardown
from shipyard.inventory import load_environment

STALE = ("failed to remove network shipyard-ci_default: Error response from daemon: error while removing "
         "network: network shipyard-ci_default id c8ce has active endpoints\n")


def _engine(monkeypatch, down_code: int, down_err: str, containers: str = "", attached: dict | None = None):
    """Answers the argv teardown runs as the engine would; records them."""
    seen: list[list[str]] = []

    def run(argv, **_):
        seen.append(argv)
        if "down" in argv:
            return subprocess.CompletedProcess(argv, down_code, "", down_err)
        if argv[:2] == ["docker", "ps"]:
            return subprocess.CompletedProcess(argv, 0, containers, "")
        if argv[:3] == ["docker", "network", "ls"]:
            return subprocess.CompletedProcess(argv, 0, "shipyard-ci_default\n", "")
        if argv[:3] == ["docker", "network", "inspect"]:
            return subprocess.CompletedProcess(argv, 0, json.dumps([{"Containers": attached or {}}]), "")
        raise AssertionError(argv)

    monkeypatch.setattr(teardown.subprocess, "run", run)
    return seen


def test_a_network_with_nothing_attached_that_the_engine_will_not_remove_is_said_and_done(monkeypatch, capsys):
    _engine(monkeypatch, 1, STALE)
    assert teardown.compose_down("/opt/shipyard/ci", "shipyard-ci", volumes=True) == 0
    err = capsys.readouterr().err
    assert "network shipyard-ci_default left in place" in err and "restart the Docker engine" in err


@pytest.mark.parametrize("case", [
    {"containers": "3f2a1b\n"},  # a container of the project is still there
    {"attached": {"abc": {"Name": "shipyard-ci-postgres-1"}}},  # one is attached to the network
])
def test_the_same_error_with_something_of_the_project_left_is_a_failure(monkeypatch, case):
    _engine(monkeypatch, 1, STALE, **case)
    assert teardown.compose_down("/opt/shipyard/ci", "shipyard-ci", volumes=True) == 1


def test_any_other_failure_is_a_failure_without_looking_further(monkeypatch):
    seen = _engine(monkeypatch, 1, "Error response from daemon: remove shipyard-ci_pgdata: volume is in use\n")
    assert teardown.compose_down("/opt/shipyard/ci", "shipyard-ci", volumes=True) == 1
    assert len(seen) == 1


def test_quiet_success_prints_nothing(monkeypatch, capsys):
    _engine(monkeypatch, 0, " Container shipyard-ci-redis-1  Removed\n")
    assert teardown.compose_down("/opt/shipyard/ci", "shipyard-ci", volumes=False, echo=False) == 0
    assert capsys.readouterr() == ("", "")


def test_a_deployed_host_whose_engine_does_not_answer_is_named_with_the_fix(monkeypatch, repo):
    settings = load_environment(repo, "ci", {})
    host = settings.hosts[0]
    asked: list[list[str]] = []

    def run(argv, **_):
        asked.append(argv)
        if argv[0] == "test":
            return subprocess.CompletedProcess(argv, 0, "", "")
        return subprocess.CompletedProcess(argv, 1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                                           "Is the docker daemon running?\n")

    monkeypatch.setattr(teardown.subprocess, "run", run)
    [problem] = teardown.engine_problems(settings, [host])
    assert problem.where == f"ci on {host.name}" and "Cannot connect" in problem.what
    assert "start it" in problem.fix and "make down ENV=ci" in problem.fix
    assert not any("down" in argv for argv in asked)  # nothing was taken down


def test_a_host_with_nothing_deployed_is_not_asked_about_its_engine(monkeypatch, repo):
    settings = load_environment(repo, "ci", {})
    monkeypatch.setattr(teardown.subprocess, "run", lambda argv, **_: subprocess.CompletedProcess(argv, 1, "", ""))
    assert teardown.engine_problems(settings, list(settings.hosts)) == []
