"""The task platform answers through the edge, and a task created there is processed by a worker."""

import hashlib
import json
import time

import jwt
import pytest
import requests

from shipyard import topology
from shipyard.components.postgres.instances import node_names


@pytest.fixture(scope="module")
def edge(target):
    if not target.runs("edge"):
        pytest.skip("no edge on this host")
    bind, port = topology.published(target.settings, target.rendered.host, "edge")
    return f"http://{'127.0.0.1' if bind == '0.0.0.0' else bind}:{port}"


@pytest.fixture(scope="module")
def token(target):
    key = target.host.file(f"{target.project_dir}/secrets/api/jwt_signing_key").content_string.strip()
    app = target.settings.app
    return jwt.encode({"sub": "verify-tenant", "iss": app.jwt_issuer, "aud": app.jwt_audience,
                       "exp": int(time.time()) + 300}, key, algorithm="HS256")


def test_api_ready_through_edge(edge):
    response = requests.get(f"{edge}/health/ready", timeout=5)
    assert response.status_code == 200, response.text


def test_version_through_edge(edge, target):
    body = requests.get(f"{edge}/version", timeout=5).json()
    assert body["version"] == target.settings.app.version
    assert body["colour"] == target.settings.app.release_colour


def test_task_created_through_edge_is_processed_by_a_worker(edge, token):
    payload = {"verify": f"task-{time.time_ns()}", "n": [1, 2, 3]}
    headers = {"Authorization": f"Bearer {token}"}
    created = requests.post(f"{edge}/v1/tasks", json={"kind": "checksum", "payload": payload},
                            headers=headers, timeout=5)
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task = requests.get(f"{edge}/v1/tasks/{task_id}", headers=headers, timeout=5).json()
        if task["status"] in ("succeeded", "dead"):
            break
        time.sleep(0.3)
    assert task["status"] == "succeeded", task
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    assert task["result"] == {"sha256": hashlib.sha256(canonical).hexdigest()}


def test_unauthenticated_request_is_refused(edge):
    response = requests.get(f"{edge}/v1/tasks", timeout=5)
    assert response.status_code == 401
    assert set(response.json()) == {"code", "message", "request_id"}


def test_the_platform_connects_as_its_own_roles_never_as_a_superuser(target):
    """db-setup's roles in use: every client session on the primary is a non-superuser, and
    the API and workers are connected as the app role."""
    if not target.runs("postgres"):
        pytest.skip("no PostgreSQL on this host")
    as_replicator = "host=127.0.0.1 user=replicator dbname=postgres passfile=/run/secrets/replication_pgpass"

    def ask(node: str, query: str) -> str:
        code, out, err = target.exec(node, ["psql", as_replicator, "-qtAX", "-c", query])
        assert code == 0, err
        return out.strip()

    primary = next(n for n in node_names(target.settings) if ask(n, "SELECT pg_is_in_recovery()") == "f")
    sessions = ask(primary, "SELECT r.rolname, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename "
                            "WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()").splitlines()
    assert sessions and all(line.endswith("|f") for line in sessions), f"superuser sessions: {sessions}"
    assert f"{target.settings.app.db_app_role}|f" in sessions, sessions
