import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The task platform's test helpers (taskplatform_testing) serve the e2e tests too.
sys.path.insert(0, str(REPO / "services"))


def pytest_addoption(parser):
    parser.addoption("--shipyard-env", default="local", help="environment that tests/infra and tests/e2e check")
    parser.addoption("--shipyard-limit", default="", help="tests/infra: only these hosts (`make verify LIMIT=h1,h3`)")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
