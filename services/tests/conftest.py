"""Integration fixtures: a real PostgreSQL and Redis for the session, the real API process,
and helpers to act as a tenant. Tests use a fresh tenant each, so they do not see each other."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
import requests

from taskplatform_testing.servers import Platform, start_platform, write_config


@pytest.fixture(scope="session")
def platform() -> Platform:
    started = start_platform()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def api_url(platform) -> str:
    return platform.start_api(processes=2)


class Tenant:
    def __init__(self, base: str, key: str, name: str | None = None):
        self.base = base
        self.name = name or f"tenant-{uuid.uuid4().hex[:8]}"
        token = jwt.encode({"sub": self.name, "exp": int(time.time()) + 3600}, key, algorithm="HS256")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def create(self, kind: str = "checksum", payload: dict | None = None, key: str | None = None):
        headers = {"Idempotency-Key": key} if key else {}
        return self.session.post(f"{self.base}/v1/tasks", json={"kind": kind, "payload": payload or {}},
                                 headers=headers, timeout=10)

    def get(self, task_id: str):
        return self.session.get(f"{self.base}/v1/tasks/{task_id}", timeout=10)

    def wait_for(self, task_id: str, statuses=("succeeded", "dead", "cancelled"), timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.get(task_id).json()
            if task["status"] in statuses:
                return task
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} still {task['status']} after {timeout}s: {task}")


@pytest.fixture
def tenant(api_url, platform) -> Tenant:
    return Tenant(api_url, platform.jwt_key)


@pytest.fixture
def other_tenant(api_url, platform) -> Tenant:
    return Tenant(api_url, platform.jwt_key)


def wait_config_version(api_url: str, version: str, timeout: float = 10) -> None:
    """Every API process must have applied it: ask several times (requests spread over processes)."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        if requests.get(f"{api_url}/v1/config", timeout=5).json()["version"] == version:
            seen += 1
            if seen >= 10:
                return
        else:
            seen = 0
        time.sleep(0.05)
    raise AssertionError(f"config version {version} not applied within {timeout}s")


@pytest.fixture
def runtime_config(platform, api_url):
    """Change the runtime config for one test; the defaults come back afterwards."""
    counter = {"n": 0}

    def apply(**overrides) -> str:
        counter["n"] += 1
        version = f"test-{uuid.uuid4().hex[:6]}"
        write_config(platform.config_file, version=version, **overrides)
        wait_config_version(api_url, version)
        return version

    yield apply
    if counter["n"]:
        write_config(platform.config_file)
        wait_config_version(api_url, "1")
