"""`taskplatform consul-setup`: the task platform's own Consul ACL policies and tokens, and the
first runtime config document.

Run once per deploy, before the API and workers start, with the Consul management token (the
only process of the platform that gets it), like ``db-setup`` with the database superuser.
Least privilege: each service (``TASKS_CONSUL_SERVICES``: api, worker) gets a policy that may
read its own prefix ``shipyard/<env>/<service>/`` and the shared one ``shipyard/<env>/shared/``,
nothing else (no write, no other key), and a token whose SecretID is the service's stored
secret (``consul_token_<service>``), so the value lives in the deploy's secret store and is
delivered to the service as a file. Idempotent: policies are created or updated to exactly
these rules; a token that exists keeps its SecretID and gets exactly its policy.

The runtime config key is written only when absent (check-and-set index 0): after the first
deploy Consul holds the truth, and ``make config-push`` changes it, never a re-deploy.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import requests

from taskplatform import consul_keys
from taskplatform.secrets import SecretSource
from taskplatform.settings import ProcessSettings


class ConsulSetupError(RuntimeError):
    pass


def policy_rules(env: str, service: str) -> str:
    """JSON ACL rules (Consul 1.8 accepts them as HCL's JSON form): read two prefixes."""
    return json.dumps({"key_prefix": {consul_keys.service_prefix(env, service): {"policy": "read"},
                                      consul_keys.shared_prefix(env): {"policy": "read"}}}, sort_keys=True)


class _Api:
    def __init__(self, base: str, token: str, timeout: float = 5.0):
        self.base, self.token, self.timeout = base, token, timeout
        self.session = requests.Session()

    def call(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        return self.session.request(method, f"{self.base}{path}", timeout=self.timeout,
                                    headers={"X-Consul-Token": token or self.token}, **kwargs)

    def ok(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.call(method, path, **kwargs)
        if response.status_code != 200:
            raise ConsulSetupError(f"{method} {path}: {response.status_code} {response.text.strip()[:300]}")
        return response


def _wait_for_acl(api: _Api, deadline_s: float) -> None:
    # Right after an election the ACL system answers "legacy mode" (500) for a moment.
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            response = api.call("GET", "/v1/acl/token/self")
            if response.status_code == 200:
                return
            reason = f"{response.status_code} {response.text.strip()[:200]}"
        except requests.RequestException as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise ConsulSetupError(f"Consul at {api.base} not ready with the management token: {reason}")
        time.sleep(0.5)


def _ensure_policy(api: _Api, name: str, rules: str) -> str:
    found = api.call("GET", f"/v1/acl/policy/name/{name}")
    body = {"Name": name, "Description": "Shipyard: read of the service's own and the shared runtime config",
            "Rules": rules}
    if found.status_code == 200:
        policy = found.json()
        if policy["Rules"] != rules:
            api.ok("PUT", f"/v1/acl/policy/{policy['ID']}", json=body)
            return f"policy {name} updated"
        return f"policy {name} unchanged"
    if "ACL not found" not in found.text:  # 403 means "missing" here, unless it says otherwise
        raise ConsulSetupError(f"reading policy {name}: {found.status_code} {found.text.strip()[:300]}")
    api.ok("PUT", "/v1/acl/policy", json=body)
    return f"policy {name} created"


def _ensure_token(api: _Api, service: str, secret_id: str, policy: str) -> list[str]:
    mine = api.call("GET", "/v1/acl/token/self", token=secret_id)
    body = {"Description": f"Shipyard: {service}", "Policies": [{"Name": policy}]}
    if mine.status_code == 200:
        token = mine.json()
        if [p["Name"] for p in token.get("Policies") or []] != [policy]:
            api.ok("PUT", f"/v1/acl/token/{token['AccessorID']}", json=body)
            done = [f"token of {service} given exactly policy {policy}"]
        else:
            done = [f"token of {service} unchanged"]
    else:
        api.ok("PUT", "/v1/acl/token", json={**body, "SecretID": secret_id})
        done = [f"token of {service} created"]
    return done + _revoke_others(api, service, secret_id, policy)


def _revoke_others(api: _Api, service: str, secret_id: str, policy: str) -> list[str]:
    """A rotated token (`make secrets-rotate NAME=consul_token_<service>`): the service's tokens
    (those holding its policy, which names the environment) with another SecretID are deleted,
    so the old value is refused from now on. Its processes are
    recreated with the new one right after this job; until then they keep their last good config."""
    done = []
    for token in api.ok("GET", "/v1/acl/tokens").json():
        if [p.get("Name") for p in token.get("Policies") or []] != [policy]:
            continue
        found = api.ok("GET", f"/v1/acl/token/{token['AccessorID']}").json()
        if found.get("SecretID") != secret_id:
            api.ok("DELETE", f"/v1/acl/token/{token['AccessorID']}")
            done.append(f"an old token of {service} revoked (accessor {token['AccessorID'][:8]}...)")
    return done


def setup(settings: ProcessSettings, secrets: SecretSource, env: str, services: list[str],
          seed: bytes | None, ready_timeout_s: float = 60.0) -> list[str]:
    """Policies, tokens and (when absent) the runtime config; returns what it did, for the log."""
    host, _, port = settings.consul_addrs.split(",")[0].partition(":")
    api = _Api(f"http://{host}:{port or 8500}", secrets.get("consul_admin_token"))
    _wait_for_acl(api, ready_timeout_s)
    done = []
    for service in services:
        name = f"shipyard-{env}-{service}"
        done.append(_ensure_policy(api, name, policy_rules(env, service)))
        done += _ensure_token(api, service, secrets.get(f"consul_token_{service}"), name)
    if seed is not None:
        done.append(_seed(api, settings.consul_runtime_path, env, seed))
    return done


def _seed(api: _Api, key: str, env: str, seed: bytes) -> str:
    """Create the runtime config key only when absent (check-and-set index 0), with its entry in
    the history ``make config-history`` shows, in one transaction."""
    version = str(json.loads(seed).get("version", ""))
    entry = json.dumps({"document": json.loads(seed), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "by": "consul-setup", "note": "seeded by the first deploy"}, sort_keys=True).encode()
    ops = [{"KV": {"Verb": "cas", "Key": key, "Value": base64.b64encode(seed).decode(), "Index": 0}}]
    if version.isdigit():
        ops.append({"KV": {"Verb": "set", "Key": consul_keys.history_key(env, version),
                           "Value": base64.b64encode(entry).decode()}})
    response = api.call("PUT", "/v1/txn", json=ops)
    if response.status_code == 409 and "index is stale" in response.text:
        return f"runtime config at {key} kept (Consul holds the current one)"
    if response.status_code != 200:
        raise ConsulSetupError(f"seeding {key}: {response.status_code} {response.text.strip()[:300]}")
    return f"runtime config seeded at {key}"


def read_seed(path: str) -> bytes:
    return Path(path).read_bytes()
