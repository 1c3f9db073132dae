"""The task platform answers through the edge, and a task created there is processed by a worker."""

import hashlib
import json
import time

import pytest
import requests

from shipyard.components.postgres.instances import node_names
from shipyard.components.taskplatform import consul_keys, runtime
from shipyard.components.taskplatform.commands import token_argv


@pytest.fixture(scope="module")
def edge(target, tmp_path_factory):
    """Requests through the edge as a user sends them: plain HTTP where the edge serves it, else
    HTTPS checked against the environment's edge CA (its certificate names the host's address)."""
    if not target.runs("edge"):
        pytest.skip("no edge on this host")
    if not target.settings.edge.tls.redirects:
        return Edge(f"http://{target.reach('edge')}", True)
    from shipyard.components.edge import certificates
    from shipyard.secretstore import read_held

    ca = tmp_path_factory.mktemp("edge-ca") / "ca.pem"
    ca.write_text(read_held(target.repo, target.settings.name, certificates.CA_CERT).value)
    return Edge(f"https://{target.reach('edge', 'edge_https')}", str(ca))


class Edge:
    """The edge's base URL and how its certificate is checked."""

    def __init__(self, base: str, verify: bool | str) -> None:
        self.base, self.verify = base, verify

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(f"{self.base}{path}", verify=self.verify, timeout=5, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(f"{self.base}{path}", verify=self.verify, timeout=5, **kwargs)


@pytest.fixture(scope="module")
def token(target):
    """Minted as an operator does (`make token`): in the live API, with the key set it reads."""
    code, out, err = target.exec(target.live("api"), token_argv("verify-tenant", None, 300))
    assert code == 0, err
    return out.strip()


def test_api_ready_through_edge(edge):
    response = edge.get("/health/ready")
    assert response.status_code == 200, response.text


def test_the_edge_serves_the_live_colour_and_version(edge, target):
    """What the host's release state says is live is what users reach (shipyard.bluegreen)."""
    state = target.release
    response = edge.get("/version")
    assert response.json() == {"version": state.live_version, "colour": state.live}
    assert response.headers["X-Release"] == f"{state.live}/{state.live_version}"


def test_task_created_through_edge_is_processed_by_a_worker(edge, token):
    payload = {"verify": f"task-{time.time_ns()}", "n": [1, 2, 3]}
    headers = {"Authorization": f"Bearer {token}"}
    created = edge.post("/v1/tasks", json={"kind": "checksum", "payload": payload}, headers=headers)
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        task = edge.get(f"/v1/tasks/{task_id}", headers=headers).json()
        if task["status"] in ("succeeded", "dead"):
            break
        time.sleep(0.3)
    assert task["status"] == "succeeded", task
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    assert task["result"] == {"sha256": hashlib.sha256(canonical).hexdigest()}


def test_unauthenticated_request_is_refused(edge):
    response = edge.get("/v1/tasks")
    assert response.status_code == 401
    assert set(response.json()) == {"code", "message", "request_id"}


def test_the_platform_connects_as_its_own_roles_never_as_a_superuser(target):
    """db-setup's roles in use: every client session on the primary is a non-superuser, and
    the API and workers are connected as the app role (secrets.backend vault: as Vault's
    dynamic users, members of it)."""
    if not target.runs("postgres"):
        pytest.skip("no PostgreSQL on this host")
    as_replicator = "host=127.0.0.1 user=replicator dbname=postgres passfile=/run/secrets/replication_pgpass"

    def ask(node: str, query: str) -> str:
        code, out, err = target.exec(node, ["psql", as_replicator, "-qtAX", "-c", query])
        assert code == 0, err
        return out.strip()

    primary = next(n for n in node_names(target.settings) if ask(n, "SELECT pg_is_in_recovery()") == "f")
    # The node's own Patroni is a superuser session from loopback, and its backup schedule's
    # tools connect over the node's Unix socket (pgBackRest, whose first query runs before it
    # sets its application_name, and the psql recording the newest backup's time): only a
    # process inside the node's container reaches either, never the platform, which connects
    # over the network.
    sessions = ask(primary, "SELECT r.rolname, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename "
                            "WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() "
                            "AND NOT (a.application_name = 'Patroni' AND a.client_addr = '127.0.0.1') "
                            "AND a.client_addr IS NOT NULL").splitlines()
    assert sessions and all(line.endswith("|f") for line in sessions), f"superuser sessions: {sessions}"
    app = target.settings.app.db_app_role
    if target.settings.secrets.backend == "vault":
        # Vault's dynamic users, each a member of the app role, and none as the app role itself:
        # its static password serves no one.
        members = ask(primary, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                               f"AND usename <> '{app}' AND pg_has_role(usename, '{app}', 'MEMBER')")
        assert int(members) > 0 and f"{app}|f" not in sessions, sessions
    else:
        assert f"{app}|f" in sessions, sessions


# In the container, with its own token file: the status of a read or write of a key.
_CONSUL_PROBE = """
import sys, requests
from taskplatform.secrets import for_process
from taskplatform.settings import ProcessSettings
addr, method, key = sys.argv[1:4]
token = for_process(ProcessSettings()).get('consul_token')  # as the service reads it: a file, or Vault's copy
r = requests.request(method, f'http://{addr}/v1/kv/{key}', headers={'X-Consul-Token': token},
                     data=b'x' if method == 'PUT' else None, timeout=5)
print(r.status_code)
"""


# In the container, with its own token: the first 16 hex digits of the SHA-256 of a key's value.
_CONSUL_DIGEST = """
import hashlib, sys, requests
from taskplatform.secrets import for_process
from taskplatform.settings import ProcessSettings
addr, key = sys.argv[1:3]
token = for_process(ProcessSettings()).get('consul_token')
r = requests.get(f'http://{addr}/v1/kv/{key}?raw', headers={'X-Consul-Token': token}, timeout=5)
r.raise_for_status()
print(hashlib.sha256(r.content).hexdigest()[:16])
"""


def _consul_status(target, service: str, method: str, key: str) -> str:
    addr = target.container_of(service)["Config"]["Env"]
    addr = next(e.split("=", 1)[1] for e in addr if e.startswith("TASKS_CONSUL_ADDRS=")).split(",")[0]
    code, out, err = target.exec(service, ["python", "-c", _CONSUL_PROBE, addr, method, key])
    assert code == 0, err
    return out.strip()


@pytest.mark.parametrize("reader, other", [("api", "worker"), ("worker", "api")])
def test_each_service_consul_token_reads_its_own_and_the_shared_config_and_nothing_else(target, reader, other):
    if not target.runs("taskplatform") or not target.runs("consul"):
        pytest.skip("no task platform with Consul on this host")
    env, instance = target.settings.name, target.live(reader)
    assert _consul_status(target, instance, "GET", consul_keys.runtime_key(env)) == "200"
    assert _consul_status(target, instance, "GET", consul_keys.service_prefix(env, other) + "probe") == "403"
    assert _consul_status(target, instance, "GET", consul_keys.runtime_key(f"{env}-other")) == "403"
    assert _consul_status(target, instance, "PUT", consul_keys.runtime_key(env)) == "403"
    assert _consul_status(target, instance, "PUT", consul_keys.service_prefix(env, reader) + "probe") == "403"


def test_every_instance_applied_the_runtime_config_consul_holds(target):
    if not target.runs("taskplatform") or not target.runs("consul"):
        pytest.skip("no task platform with Consul on this host")
    # What Consul holds, read as the live API reads it (its own token, its own Consul address):
    # the same on every host, whichever host runs the setup that holds the admin token.
    api = target.live("api")
    addr = next(e.split("=", 1)[1] for e in target.container_of(api)["Config"]["Env"]
                if e.startswith("TASKS_CONSUL_ADDRS=")).split(",")[0]
    code, out, err = target.exec(api, ["python", "-c", _CONSUL_DIGEST, addr, consul_keys.runtime_key(target.settings.name)])
    assert code == 0, err
    wanted = out.strip()
    # Each API process and worker writes what it applied (shipyard/components/taskplatform/runtime.py
    # reads the same files for `make config-push`): every live one, none missing.
    app = target.settings.app
    expected = {target.live("api"): app.api_processes, target.live("worker"): 1}
    containers = [c for c in target.docker.containers()
                  if c.labels.get("com.docker.compose.service") in expected and c.status == "running"]
    assert sorted(c.labels["com.docker.compose.service"] for c in containers) == \
        sorted([target.live("api")] + [target.live("worker")] * app.worker_replicas)
    for container in containers:
        output = container.exec_run(["sh", "-c", runtime.READ_REPORTS]).output.decode()
        reports = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert len(reports) == expected[container.labels["com.docker.compose.service"]], (container.name, reports)
        for report in reports:
            assert report["hash"] == wanted and report["watch"]["state"] == "ok", (container.name, report)
