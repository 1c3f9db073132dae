"""Consul's servers spread over three hosts, as `production` places them — simulated on this
machine's one Docker engine, since no other host exists here.

Each simulated host is what a real one has of its own: a compose project with its own network
(no container of one reaches another's by name or container address) and its own private
address (10.213.8.N, added to the loopback interface for the test and removed after). The
servers' compose services and config files are the ones Shipyard renders for such hosts; the
only changes are the host-local ones two hosts on one engine force: the project name and the
project network's subnet. So the servers can meet only through the ports they publish on their
hosts' addresses and the addresses they advertise — the multi-host path, for real.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from shipyard import image_plan, topology
from shipyard.components import COMPONENTS
from shipyard.components.consul import SERF_LAN, SERVER_RPC
from shipyard.render import render_host, render_secret_file, secret_variables
from shipyard.render.compose import COMPONENT_LABEL
from shipyard.settings import HostSettings, load_settings

ADDRESSES = ("10.213.8.1", "10.213.8.2", "10.213.8.3")
SUBNET_PREFIX = "10.213.9."  # the environment's network; each simulated host gets its own below
CONSUL = next(c for c in COMPONENTS if c.name == "consul")


def _settings():
    hosts = [HostSettings(name=f"host-{n}", connect="@local", address=address,
                          roles=("edge", "app", "data", "control") if n == 1 else ("control",))
             for n, address in enumerate(ADDRESSES, 1)]
    data = {"name": "spread", "images": {"source": "local"}, "network": {"subnet": SUBNET_PREFIX + "0/24"},
            "consul": {"servers": 3}, "ports": {"consul_http": 18600},  # apart from local's and ci's
            # Consul alone is under test: no observability host, so no monitoring and no log store.
            "prometheus": {"enabled": False}, "alertmanager": {"enabled": False}, "logs": {"enabled": False}}
    settings = load_settings(data, hosts, "tests/e2e/test_consul_hosts.py", {})
    assert not topology.build(settings).port_collisions()
    return settings


def _docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    return done


def _write_host(settings, host, root: Path, values: dict[str, str], number: int) -> str:
    """The host's project: Consul's rendered config dir, its secret files, and its compose file
    with only Consul's services. Returns the compose project name."""
    rendered = render_host(settings, host)
    for path, content in rendered.shipped.items():
        if path.startswith("consul/"):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(content)
    variables = secret_variables(settings, host)["consul"]
    services = {name: svc for name, svc in rendered.compose["services"].items()
                if svc["labels"][COMPONENT_LABEL] == "consul"}
    for name in services:
        inst = topology.build(settings).find(name, host)
        svc = inst.service
        folder = root / "secrets" / name
        folder.mkdir(parents=True)
        for secret in inst.secrets:
            value = values[secret.secret]
            content = (render_secret_file(CONSUL, secret.template, secret.secret, value, variables)
                       if secret.template else value.encode())
            (folder / secret.target).write_bytes(content)
            os.chown(folder / secret.target, svc.uid, svc.uid)
            (folder / secret.target).chmod(0o400)
        os.chown(folder, svc.uid, svc.uid)
    project = f"shipyard-spread-{host.name}"
    document = {**rendered.compose, "name": project, "services": services,
                "volumes": {f"consul-data-{n}": {} for n in (i.number for i in topology.build(settings).instances_on(host)
                                                            if i.name in services)}}
    # Two hosts on one engine cannot both hold one subnet: each gets its own (host-local only).
    text = yaml.safe_dump(document, sort_keys=False).replace(SUBNET_PREFIX, f"10.213.{9 + number}.")
    (root / "compose.yaml").write_text(text)
    return project


def _api(address: str, port: int, token: str, path: str, **kwargs) -> requests.Response:
    return requests.request(kwargs.pop("method", "GET"), f"http://{address}:{port}/v1/{path}",
                            headers={"X-Consul-Token": token}, timeout=5, **kwargs)


def _wait(condition, what: str, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (requests.RequestException, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})")


@pytest.fixture(scope="module")
def spread(tmp_path_factory):
    settings = _settings()
    ref = image_plan.versioned_ref(settings, CONSUL, "consul", None)
    if _docker("image", "inspect", ref, check=False).returncode != 0:
        pytest.fail(f"image {ref} is missing: run `make up ENV=ci` first (it builds it)")
    added = []
    for address in ADDRESSES:
        if subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], capture_output=True).returncode == 0:
            added.append(address)
    values = {"consul_gossip_key": base64.b64encode(os.urandom(32)).decode(),
              "consul_management_token": str(uuid.uuid4()), "consul_agent_token": str(uuid.uuid4()),
              "consul_metrics_token": str(uuid.uuid4())}  # Prometheus's, made by the agent-token job
    projects = []
    try:
        for number, host in enumerate(settings.hosts, 1):
            root = tmp_path_factory.mktemp(host.name)
            projects.append((host, root, _write_host(settings, host, root, values, number)))
        # All hosts at once, as a deploy's step does: the agent-token job on the first host waits
        # for its server to be healthy, which takes the servers of the other hosts.
        starting = [subprocess.Popen(["docker", "compose", "-f", str(root / "compose.yaml"), "-p", project, "up", "-d"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                    for _, root, project in projects]
        for process in starting:
            output, _ = process.communicate(timeout=240)
            assert process.returncode == 0, output
        yield settings, values["consul_management_token"], projects
    finally:
        for _, root, project in projects:
            _docker("compose", "-f", str(root / "compose.yaml"), "-p", project, "down", "-v", "-t", "5", check=False)
        for address in added:
            subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True)


def _servers(settings):
    return {inst.name: inst for inst in topology.build(settings).instances_of("consul", "consul")}


def _healthy(container: str) -> bool:
    return _docker("inspect", "-f", "{{.State.Health.Status}}", container, check=False).stdout.strip() == "healthy"


def _http(settings, inst) -> tuple[str, int]:
    return topology.build(settings).binding(inst)


def _peers(settings, token, inst) -> list[str]:
    address, port = _http(settings, inst)
    return sorted(_api(address, port, token, "status/peers").json())


def test_three_hosts_form_one_cluster_through_their_published_addresses(spread):
    settings, token, projects = spread
    servers = _servers(settings)
    assert len({inst.host.name for inst in servers.values()}) == 3
    # The health gate of each server: a leader, and all three servers raft peers.
    for (host, _, project), name in zip(projects, servers):
        _wait(lambda: _healthy(f"{project}-{name}-1"), f"{name} on {host.name} healthy", timeout_s=180)
    raft = sorted(f"{a}:{SERVER_RPC}" for a in ADDRESSES)
    for inst in servers.values():
        assert _peers(settings, token, inst) == raft, inst.name  # raft knows them by host address
    address, port = _http(settings, servers["consul-1"])
    members = _api(address, port, token, "agent/members").json()
    assert sorted((m["Addr"], m["Port"], m["Status"]) for m in members) == \
        [(a, SERF_LAN, 1) for a in ADDRESSES]  # gossip too; 1: alive
    # Only the host's own address (or loopback: HTTP for its own host's clients) holds the
    # ports, never every address; and the projects share no network.
    for (host, _, project), name in zip(projects, servers):
        ports = [line for line in _docker("port", f"{project}-{name}-1").stdout.split("\n") if line]
        assert all(line.split(" -> ")[1].startswith((host.address + ":", "127.0.0.1:")) for line in ports), ports
        assert {f"{SERVER_RPC}/tcp -> {host.address}:{SERVER_RPC}", f"{SERF_LAN}/tcp -> {host.address}:{SERF_LAN}",
                f"{SERF_LAN}/udp -> {host.address}:{SERF_LAN}"} <= set(ports)
    # The agent-token job (first host) made the servers' agent token; each server's agent then
    # writes its own catalog entry with it (retried every ~15 s until the token exists).
    _wait(lambda: _docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                          f"{projects[0][2]}-consul-agent-token-1").stdout.strip() == "exited 0", "the agent-token job")
    for name in servers:
        _wait(lambda: (_api(address, port, token, f"catalog/node/{name}").json() or {}).get("Node", {}).get(
            "TaggedAddresses"), f"{name}'s catalog entry written by its agent", timeout_s=120)
    networks = {_docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", f"{project}-{name}-1").stdout
                for (_, _, project), name in zip(projects, servers)}
    assert len({tuple(json.loads(n)) for n in networks}) == 3


def test_a_write_on_one_host_is_read_on_another_and_anonymous_reads_are_refused(spread):
    settings, token, _ = spread
    servers = list(_servers(settings).values())
    first, last = _http(settings, servers[1]), _http(settings, servers[2])
    assert _api(*first, token, "kv/shipyard/spread/shared/probe", method="PUT", data=b"from-host-2").json() is True
    assert _api(*last, token, "kv/shipyard/spread/shared/probe?raw").content == b"from-host-2"
    assert _api(*last, "", "kv/shipyard/spread/shared/probe?raw").status_code == 403


def test_losing_the_leaders_host_elects_another_and_writes_go_on_then_it_rejoins(spread):
    settings, token, projects = spread
    servers = _servers(settings)
    address, port = _http(settings, servers["consul-1"])
    leader = _api(address, port, token, "status/leader").json()
    down = next(p for p in projects if leader.startswith(p[0].address + ":"))
    survivors = [inst for inst in servers.values() if inst.host.name != down[0].name]
    _docker("compose", "-f", str(down[1] / "compose.yaml"), "-p", down[2], "stop", "-t", "5")
    try:
        new = _wait(lambda: (lambda got: got if got and got != leader else None)(
            _api(*_http(settings, survivors[0]), token, "status/leader").json()), "a new leader", timeout_s=60)
        assert new.split(":")[0] in {i.host.address for i in survivors}
        put = _wait(lambda: _api(*_http(settings, survivors[1]), token, "kv/shipyard/spread/shared/after",
                                 method="PUT", data=b"two-of-three").json() is True, "a write with two of three")
        assert put
    finally:
        _docker("compose", "-f", str(down[1] / "compose.yaml"), "-p", down[2], "start")
    back = next(inst for inst in servers.values() if inst.host.name == down[0].name)
    _wait(lambda: _healthy(f"{down[2]}-{back.name}-1"), f"{back.name} back and healthy", timeout_s=120)
    # It caught up on what was written while its host was gone.
    assert _wait(lambda: _api(*_http(settings, back), token, "kv/shipyard/spread/shared/after?raw&stale").content
                 == b"two-of-three", "the write replicated to the returning server", timeout_s=30)
