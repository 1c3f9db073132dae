"""The deploy's transport to Patroni's REST API (patroni_api.Transport): ``docker exec`` into the
node, where a small Python script asks the API on 127.0.0.1:8008 — published, if at all, only
for the nodes on other hosts. For a change it reads the API's credentials inside the container from the node's 0400
fragment (/run/secrets/patroni-restapi.yml): no password on an argv, in an environment or
through this machine. SQL runs there too, as the replication role through the node's passfile
(what status.py and checks.py do)."""

from __future__ import annotations

import json

import docker.errors

from shipyard import topology
from shipyard.components.postgres import patroni
from shipyard.controller.hosts import HostControl, HostView, exec_in
from shipyard.errors import ShipyardError

_API_FRAGMENT = next(s.target for s in patroni.SECRETS if s.secret == "patroni_api_password")
# Runs inside the node: argv method, path, JSON body ('' for none), timeout. Prints the status
# line then the body; status 0 when nothing answered.
_REQUEST = f"""
import base64, sys, urllib.error, urllib.request
method, path, body, timeout = sys.argv[1:5]
headers = {{"Content-Type": "application/json"}}
if method != "GET":
    import yaml
    with open("/run/secrets/{_API_FRAGMENT}") as f:
        auth = yaml.safe_load(f)["restapi"]["authentication"]
    token = base64.b64encode(f"{{auth['username']}}:{{auth['password']}}".encode()).decode()
    headers["Authorization"] = "Basic " + token
request = urllib.request.Request("http://127.0.0.1:{patroni.API_PORT}" + path, method=method,
                                 data=body.encode() if body else None, headers=headers)
try:
    with urllib.request.urlopen(request, timeout=float(timeout)) as reply:
        status, text = reply.status, reply.read().decode(errors="replace")
except urllib.error.HTTPError as error:
    status, text = error.code, error.read().decode(errors="replace")
except OSError as error:
    status, text = 0, str(error)
print(status)
print(text)
"""
_CONNINFO = ("host=127.0.0.1 user=replicator dbname=postgres connect_timeout=3 "
             "passfile=/run/secrets/replication_pgpass")
# A switchover answers after Patroni polled for the new leader (up to 2 x max(10, loop_wait) s).
API_TIMEOUT_S = 90


class DockerTransport:
    """Each node's container, found by its compose service on its host (the SDK: local socket
    or a tunnel over SSH, shipyard.controller.ssh). Read-only use (`make plan`) only GETs; ``changes`` must be True to send others."""

    def __init__(self, settings, changes: bool = False):
        self.settings, self.changes = settings, changes
        self._topology = topology.build(settings)
        self._faces: dict[str, HostView] = {}  # host name → its engine client, made once

    def _container(self, node: str):
        host = self._topology.find(node).host
        if host.name not in self._faces:
            # A change goes through the changing face (HostControl), a read through the read-only one.
            face = HostControl if self.changes else HostView
            self._faces[host.name] = face(self.settings, host, timeout_s=API_TIMEOUT_S + 30)
        return self._faces[host.name].container_of(node)

    def _exec(self, node: str, argv: list[str]) -> tuple[int, str, str]:
        try:
            return exec_in(self._container(node), argv)
        except (ShipyardError, docker.errors.DockerException) as exc:  # not running, gone meanwhile
            return -1, "", str(exc)

    def api(self, node: str, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
        if method != "GET" and not self.changes:
            raise ShipyardError(f"environment {self.settings.name}", f"{method} {path}: a change from a read-only view",
                                "this is a bug in Shipyard: report it")
        code, out, err = self._exec(node, ["python3", "-c", _REQUEST, method, path,
                                           json.dumps(body) if body is not None else "", str(API_TIMEOUT_S)])
        if code != 0:
            return 0, (err or out).strip()[-300:]
        status, _, text = out.partition("\n")
        return int(status or 0), text

    def sql(self, node: str, query: str) -> list[list[str]] | None:
        code, out, _ = self._exec(node, ["psql", _CONNINFO, "-qtAX", "-v", "ON_ERROR_STOP=1", "-c", query])
        if code != 0:
            return None
        return [line.split("|") for line in out.splitlines() if line]
