"""The client against the real task API: a PostgreSQL, a Redis, an API process and a worker of
the platform's own test harness (``taskplatform_testing.servers``, as ``services/tests`` start
them), on loopback. Each test acts as a fresh tenant, so tests do not see each other's tasks.

``SHIPYARD_TASKS_FROM``: the directory the package must be imported from (``make test-client``
installs the built wheel there), so that the wheel is what is tested, not the source tree."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

import shipyard_tasks
from faulty_proxy import FaultyProxy
from shipyard_tasks import AsyncClient, Client, RetryPolicy
from taskplatform_testing.servers import Platform, start_platform

# Short backoffs: the tests check when and how often the client resends, not how long it waits.
FAST = RetryPolicy(attempts=4, base_seconds=0.02, max_backoff_seconds=0.1, max_retry_after_seconds=5)


def pytest_configure(config):
    wanted = os.environ.get("SHIPYARD_TASKS_FROM")
    if wanted:
        imported = Path(shipyard_tasks.__file__).resolve()
        if Path(wanted).resolve() not in imported.parents:
            raise pytest.UsageError(f"shipyard_tasks imported from {imported}, not from the built wheel in {wanted}: "
                                    f"check PYTHONPATH (the source tree must not be on it)")


@pytest.fixture(scope="session")
def platform() -> Platform:
    started = start_platform()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def api_url(platform) -> str:
    return platform.start_api(processes=1)


@pytest.fixture(scope="session")
def worker(platform):
    """One worker, ready once its first heartbeat is written (its consumer group exists)."""
    proc = platform.start_worker()
    deadline = time.monotonic() + 30
    while not Path(proc.heartbeat).exists():
        assert proc.poll() is None, f"worker exited with {proc.returncode}; see {proc.log_path}"
        assert time.monotonic() < deadline, f"worker not ready after 30 s; see {proc.log_path}"
        time.sleep(0.05)
    return proc


@pytest.fixture
def tenant() -> str:
    return f"client-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def token(platform, tenant) -> str:
    """A JWT for the test's tenant with every scope."""
    return platform.token(tenant)


@pytest.fixture
def client(api_url, token) -> Client:
    with Client(api_url, token, retry=FAST) as opened:
        yield opened


@pytest.fixture
async def async_client(api_url, token) -> AsyncClient:
    async with AsyncClient(api_url, token, retry=FAST) as opened:
        yield opened


@pytest.fixture
def proxy(api_url) -> FaultyProxy:
    started = FaultyProxy(api_url).start()
    yield started
    started.stop()


@pytest.fixture
def anyio_backend():
    return "asyncio"
