from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--shipyard-env", default="local", help="environment that tests/infra and tests/e2e check")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
