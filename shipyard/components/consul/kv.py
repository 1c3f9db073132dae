"""The environment's Consul KV from the deploying machine, with the management token: reads,
check-and-set writes and transactions (the runtime config push, shipyard.components.taskplatform.runtime).

The servers' published addresses, tried in order (one stopped, the next answers); the token is decrypted
from the checkout's secret store in memory and sent as a header, never printed.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import requests

from shipyard import topology
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    modify_index: int


class StaleWrite(Exception):
    """A check-and-set lost: the key changed since it was read."""


class ConsulKV:
    def __init__(self, settings: EnvironmentSettings, token: str, timeout_s: float = 5.0):
        self.bases = []
        topo = topology.build(settings)
        for server in topo.instances_of("consul", "consul"):
            bound = topo.binding(server)
            if bound is not None:
                self.bases.append(f"http://{'127.0.0.1' if bound[0] == '0.0.0.0' else bound[0]}:{bound[1]}/v1")
        if not self.bases:
            raise ShipyardError(f"environment {settings.name}", "the Consul servers publish no HTTP port",
                                "set ports.consul_http in the inventory")
        self.where = f"Consul of {settings.name} ({', '.join(b[7:-3] for b in self.bases)})"
        self.settings, self.timeout_s = settings, timeout_s
        self.session = requests.Session()
        self.session.headers["X-Consul-Token"] = token

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        """The first server that answers (any server forwards to the leader)."""
        errors = []
        for base in self.bases:
            try:
                return self.session.request(method, f"{base}{path}", timeout=self.timeout_s, **kwargs)
            except requests.RequestException as exc:
                errors.append(f"{base[7:-3]}: {type(exc).__name__}")
        raise ShipyardError(self.where, f"no server answers ({'; '.join(errors)})",
                            f"check that the environment runs: make status ENV={self.settings.name}")

    def _refused(self, response: requests.Response, what: str) -> ShipyardError:
        return ShipyardError(self.where, f"{what}: {response.status_code} {response.text.strip()[:200]}",
                             "check the Consul servers (make status) and that this checkout holds the "
                             "environment's consul_management_token")

    def raft_servers(self) -> list[dict]:
        """The raft configuration as the leader holds it: each server's node, address, leader
        flag and whether it votes (Consul's /v1/operator/raft/configuration; operator:read)."""
        response = self._call("GET", "/operator/raft/configuration")
        if response.status_code != 200:
            raise self._refused(response, "reading the raft configuration")
        return response.json()["Servers"]

    def get(self, key: str) -> Entry | None:
        response = self._call("GET", f"/kv/{key}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refused(response, f"reading {key}")
        item = response.json()[0]
        return Entry(key, base64.b64decode(item["Value"] or ""), item["ModifyIndex"])

    def keys(self, prefix: str) -> list[str]:
        response = self._call("GET", f"/kv/{prefix}", params={"keys": "true"})
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise self._refused(response, f"listing {prefix}")
        return response.json()

    def delete(self, key: str) -> None:
        response = self._call("DELETE", f"/kv/{key}")
        if response.status_code != 200:
            raise self._refused(response, f"deleting {key}")

    def write(self, key: str, value: bytes, expected_index: int, also: dict[str, bytes] | None = None) -> None:
        """Write ``key`` only if its ModifyIndex is still ``expected_index`` (0: only if absent),
        with the ``also`` keys in the same transaction: all of them or none."""
        ops = [{"KV": {"Verb": "cas", "Key": key, "Value": base64.b64encode(value).decode(), "Index": expected_index}}]
        ops += [{"KV": {"Verb": "set", "Key": k, "Value": base64.b64encode(v).decode()}} for k, v in (also or {}).items()]
        response = self._call("PUT", "/txn", json=ops)
        if response.status_code == 409 and "index is stale" in response.text:
            raise StaleWrite(key)
        if response.status_code != 200:
            raise self._refused(response, f"writing {key}")
