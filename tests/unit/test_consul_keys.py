"""The task platform's Consul key layout is built in one place, the services' own module
(services/taskplatform/consul_keys.py, baked into the image); Shipyard loads that file."""

import re

import pytest

from shipyard.components.taskplatform import consul_keys
from shipyard.inventory import load_environment
from shipyard.render import render_environment

# A path of the layout built by hand: "{env}/shared/...", "{env}/history/...", "...:08d}".
HAND_BUILT = re.compile(r"\{[^{}]+\}/(shared|history)\b|:08d\}")


def test_the_layout():
    assert consul_keys.runtime_key("ci") == "shipyard/ci/shared/runtime"
    assert consul_keys.shared_prefix("ci") == "shipyard/ci/shared/"
    assert consul_keys.service_prefix("ci", "api") == "shipyard/ci/api/"
    assert consul_keys.history_key("ci", "7") == "shipyard/ci/history/00000007"
    assert consul_keys.history_key("ci", 12).startswith(consul_keys.history_prefix("ci"))


def test_shipyard_reads_the_services_own_module(repo):
    assert consul_keys.SOURCE == repo / "services" / "taskplatform" / "consul_keys.py"


@pytest.mark.parametrize("env", ["local", "ci"])
def test_the_services_are_told_the_runtime_key_of_the_layout(repo, env):
    compose = render_environment(load_environment(repo, env, {}))[env].files["compose.yaml"].decode()
    assert f"TASKS_CONSUL_RUNTIME_PATH: {consul_keys.runtime_key(env)}\n" in compose


def test_no_other_module_builds_these_paths(repo):
    files = [repo / "deploy.py", *(repo / "shipyard").rglob("*.py"), *(repo / "services" / "taskplatform").rglob("*.py"),
             *(repo / "tests" / "bench").rglob("*.py")]
    found = [f"{path.relative_to(repo)}:{n}: {line.strip()}" for path in files if path.name != "consul_keys.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if HAND_BUILT.search(line)]
    assert not found, "build Consul key paths with consul_keys (services/taskplatform/consul_keys.py):\n" + "\n".join(found)
