"""A real Consul (the bullseye 1.8.7 binary, `make host-test-deps`) for the runtime-config
tests: one server in dev mode on free loopback ports, ACLs on with default deny, and a token
that may read one prefix — as the deploy sets it up for each service."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import requests

from taskplatform_testing.servers import free_port, wait_port

CONSUL = shutil.which("consul") or "/usr/local/bin/consul"


@dataclass
class Consul:
    root: Path
    http_port: int = field(default_factory=free_port)
    management_token: str = field(default_factory=lambda: str(uuid.uuid4()))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> "Consul":
        self.root.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in ("server", "serf_lan", "serf_wan")}
        config = {"bind_addr": "127.0.0.1", "client_addr": "127.0.0.1", "disable_update_check": True,
                  "ports": {"http": self.http_port, "dns": -1, "grpc": -1, **ports},
                  "acl": {"enabled": True, "default_policy": "deny",
                          "tokens": {"master": self.management_token, "agent": self.management_token}}}
        path = self.root / "consul.json"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        self.process = subprocess.Popen([CONSUL, "agent", "-dev", f"-config-file={path}"],
                                        stdout=(self.root / "log").open("w"), stderr=subprocess.STDOUT)
        wait_port(self.http_port)
        self._until_acl_ready()
        return self

    def _until_acl_ready(self, timeout: float = 20.0) -> None:
        # Right after election the ACL system answers "legacy mode" for a moment.
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = requests.get(f"{self.url}/v1/acl/token/self", headers=self._auth(), timeout=2)
            if r.status_code == 200:
                return
            time.sleep(0.1)
        raise TimeoutError(f"Consul ACLs not ready after {timeout}s: {r.status_code} {r.text}")

    def _auth(self, token: str | None = None) -> dict[str, str]:
        return {"X-Consul-Token": token or self.management_token}

    def reader_token(self, prefix: str) -> str:
        """A token that may read ``prefix`` and nothing else (what the deploy gives a service)."""
        name = f"read-{uuid.uuid4().hex[:8]}"
        rules = json.dumps({"key_prefix": {prefix: {"policy": "read"}}})
        requests.put(f"{self.url}/v1/acl/policy", headers=self._auth(), json={"Name": name, "Rules": rules},
                     timeout=5).raise_for_status()
        secret = str(uuid.uuid4())
        requests.put(f"{self.url}/v1/acl/token", headers=self._auth(),
                     json={"SecretID": secret, "Policies": [{"Name": name}]}, timeout=5).raise_for_status()
        return secret

    def put(self, key: str, value: bytes) -> None:
        requests.put(f"{self.url}/v1/kv/{key}", headers=self._auth(), data=value, timeout=5).raise_for_status()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
