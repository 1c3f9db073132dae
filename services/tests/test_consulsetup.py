"""`taskplatform consul-setup` against a real Consul (ACLs on, default deny): each service's
token reads its own prefix and the shared one and nothing else, writes nothing; a re-run
changes nothing; the runtime config is seeded once and never overwritten by a re-deploy."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from taskplatform import consulsetup
from taskplatform.secrets import FileSecretSource
from taskplatform.settings import ProcessSettings


@pytest.fixture
def run(consul_server, tmp_path):
    env = f"e{uuid.uuid4().hex[:6]}"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    tokens = {"consul_admin_token": consul_server.management_token,
              "consul_token_api": str(uuid.uuid4()), "consul_token_worker": str(uuid.uuid4())}
    for name, value in tokens.items():
        (secrets / name).write_text(value + "\n")
    settings = ProcessSettings(consul_addrs=f"127.0.0.1:{consul_server.http_port}",
                               consul_runtime_path=f"shipyard/{env}/shared/runtime", consul_env=env)

    def setup(seed: bytes | None = b'{"version": "1"}'):
        return consulsetup.setup(settings, FileSecretSource(str(secrets)), env, ["api", "worker"], seed)

    setup.env, setup.tokens = env, tokens
    return setup


def _status(server, method: str, key: str, token: str, data: bytes | None = None) -> int:
    return requests.request(method, f"{server.url}/v1/kv/{key}", headers={"X-Consul-Token": token}, data=data,
                            timeout=5).status_code


def test_each_service_token_reads_its_own_and_the_shared_prefix_only(consul_server, run):
    done = run()
    assert "token of api created" in done and "policy shipyard-%s-worker created" % run.env in done
    env, api = run.env, run.tokens["consul_token_api"]
    for key in (f"shipyard/{env}/api/x", f"shipyard/{env}/worker/x", "elsewhere/x"):
        consul_server.put(key, b"v")
    assert _status(consul_server, "GET", f"shipyard/{env}/api/x", api) == 200
    assert _status(consul_server, "GET", f"shipyard/{env}/shared/runtime", api) == 200
    assert _status(consul_server, "GET", f"shipyard/{env}/worker/x", api) == 403
    assert _status(consul_server, "GET", "elsewhere/x", api) == 403
    assert _status(consul_server, "PUT", f"shipyard/{env}/api/x", api, b"w") == 403
    assert _status(consul_server, "PUT", f"shipyard/{env}/shared/runtime", api, b"w") == 403
    assert _status(consul_server, "GET", f"shipyard/{env}/shared/runtime", "") == 403  # anonymous


def test_a_rerun_changes_nothing_and_never_overwrites_the_runtime_config(consul_server, run):
    run(b'{"version": "1"}')
    assert json.loads(requests.get(f"{consul_server.url}/v1/kv/shipyard/{run.env}/shared/runtime?raw",
                                   headers={"X-Consul-Token": consul_server.management_token}, timeout=5).text) == {"version": "1"}
    again = run(b'{"version": "2"}')
    assert f"runtime config at shipyard/{run.env}/shared/runtime kept (Consul holds the current one)" in again
    assert all("unchanged" in line for line in again if "token" in line or "policy" in line), again
    assert json.loads(requests.get(f"{consul_server.url}/v1/kv/shipyard/{run.env}/shared/runtime?raw",
                                   headers={"X-Consul-Token": consul_server.management_token}, timeout=5).text) == {"version": "1"}


def test_a_rotated_token_replaces_the_old_one_which_is_refused_from_then_on(consul_server, run, tmp_path):
    run()
    env, old = run.env, run.tokens["consul_token_api"]
    consul_server.put(f"shipyard/{env}/api/x", b"v")
    new = str(uuid.uuid4())
    (tmp_path / "secrets" / "consul_token_api").write_text(new + "\n")
    done = run()
    assert "token of api created" in done and any(line.startswith("an old token of api revoked") for line in done)
    assert _status(consul_server, "GET", f"shipyard/{env}/api/x", new) == 200
    assert _status(consul_server, "GET", f"shipyard/{env}/api/x", old) == 403
    # The other service's token is not touched.
    assert _status(consul_server, "GET", f"shipyard/{env}/shared/runtime", run.tokens["consul_token_worker"]) == 200
    assert all("revoked" not in line for line in run())


def test_a_policy_widened_by_hand_is_put_back(consul_server, run):
    run()
    name = f"shipyard-{run.env}-api"
    auth = {"X-Consul-Token": consul_server.management_token}
    policy = requests.get(f"{consul_server.url}/v1/acl/policy/name/{name}", headers=auth, timeout=5).json()
    requests.put(f"{consul_server.url}/v1/acl/policy/{policy['ID']}", headers=auth, timeout=5,
                 json={"Name": name, "Rules": json.dumps({"key_prefix": {"": {"policy": "write"}}})}).raise_for_status()
    assert f"policy {name} updated" in run()
    assert _status(consul_server, "PUT", f"shipyard/{run.env}/api/x", run.tokens["consul_token_api"], b"w") == 403


def test_a_wrong_management_token_fails_with_the_reason(consul_server, run, tmp_path):
    (tmp_path / "secrets" / "consul_admin_token").write_text(str(uuid.uuid4()))
    with pytest.raises(consulsetup.ConsulSetupError, match="ACL not found"):
        consulsetup.setup(ProcessSettings(consul_addrs=f"127.0.0.1:{consul_server.http_port}",
                                          consul_runtime_path="shipyard/x/shared/runtime"),
                          FileSecretSource(str(tmp_path / "secrets")), "x", ["api"], None, ready_timeout_s=1)


def test_the_seed_is_the_first_entry_of_the_history(consul_server, run):
    run(b'{"version": "1", "log_level": "INFO"}')
    entry = requests.get(f"{consul_server.url}/v1/kv/shipyard/{run.env}/history/00000001?raw",
                         headers={"X-Consul-Token": consul_server.management_token}, timeout=5).json()
    assert entry["document"] == {"version": "1", "log_level": "INFO"} and entry["by"] == "consul-setup"
