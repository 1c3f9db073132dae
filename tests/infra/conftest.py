"""testinfra suite of a rolled-out environment: `make verify ENV=<env>`.

Every test runs once per host of the environment (testinfra's ``host`` for @local hosts is
``local://``; SSH hosts use ``ssh://``). What a user would check: containers healthy, ports
published only where they should be, files and secrets with the right modes, the API
answering through the edge, and a task created there processed by a worker.
"""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import testinfra

from shipyard import commands, image_plan, bluegreen
from shipyard.bluegreen import ReleaseState
from shipyard.inventory import load_environment
from shipyard.render import RenderedHost, render_host
from shipyard.settings import EnvironmentSettings, HostSettings
from shipyard import topology
from shipyard.controller.hosts import HostView
from shipyard.controller.ssh import port_tunnel

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Target:
    settings: EnvironmentSettings
    rendered: RenderedHost
    host: object  # testinfra Host
    project_dir: str

    @property
    def docker(self) -> HostView:
        """The host's Docker engine through the docker SDK (local socket, or ssh:// for SSH hosts)."""
        return HostView(self.settings, self.rendered.host)

    def containers(self) -> list[dict]:
        """`docker inspect` of every container of this environment's project on the host."""
        return [c.attrs for c in self.docker.containers()]

    def exec(self, service: str, argv: list[str], environment: dict[str, str] | None = None) -> tuple[int, str, str]:
        """``argv`` (no shell) in the running container of ``service``: (exit code, stdout, stderr).
        On this host when it runs one; else on the host that does (a PostgreSQL node on another
        data host: a cross-host link is checked from both ends)."""
        result = self._engine_of(service).container_of(service).exec_run(argv, environment=environment, demux=True)
        out, err = result.output or (None, None)
        return result.exit_code, (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace")

    def _engine_of(self, service: str) -> HostView:
        here = any(i.name == service for i in topology.build(self.settings).instances_on(self.rendered.host))
        return self.docker if here else HostView(self.settings, topology.build(self.settings).find(service).host)

    @property
    def release(self) -> ReleaseState:
        return release_state(self.settings, self.host)

    def live(self, service: str) -> str:
        """The instance name of a coloured service in the live colour (``api`` → ``api-blue``)."""
        return f"{service}-{self.release.live}"

    def runs(self, component: str) -> bool:
        """Whether any service of ``component`` runs on this host."""
        return any(i.component.name == component for i in topology.build(self.settings).instances_on(self.rendered.host))

    def runs_service(self, service: str) -> bool:
        """Whether an instance of ``service`` (a service name: ``host-prometheus``) runs on this host."""
        return any(i.service.name == service for i in topology.build(self.settings).instances_on(self.rendered.host))

    @property
    def repo(self) -> Path:
        return REPO

    def reach(self, name: str, setting: str | None = None) -> str:
        """``address:port`` at which this machine reaches what the instance ``name`` on this host
        publishes (``setting``: its extra port of that ``ports`` key, the edge's HTTPS): on an SSH
        host, a loopback port through an SSH tunnel (kept for the session)."""
        topo = topology.build(self.settings)
        published = topo.published_extra(self.rendered.host, name, setting) if setting else \
            topo.published(self.rendered.host, name)
        assert published is not None, f"{name} publishes nothing{' at ports.' + setting if setting else ''}"
        bind, port = published
        host = self.rendered.host
        if host.connect == "@local":
            return f"{LOOPBACK if bind == ANY else bind}:{port}"
        if bind != LOOPBACK:
            return f"{host.address if bind == ANY else bind}:{port}"
        if (host.name, port) not in _TUNNELS:
            _TUNNELS[(host.name, port)] = _OPEN.enter_context(port_tunnel(host, LOOPBACK, port, name))
        return _TUNNELS[(host.name, port)]

    def instance(self, service: str) -> topology.Instance:
        return topology.build(self.settings).find(service, self.rendered.host)

    def container_of(self, service: str) -> dict:
        """`docker inspect` of the container of ``service``: on this host, or on the host that runs it."""
        engine = self._engine_of(service)
        found = [c.attrs for c in engine.containers() if c.labels.get("com.docker.compose.service") == service]
        assert found, f"no container for service {service} on {engine.host.name}"
        return found[0]


LOOPBACK, ANY = "127.0.0.1", "0.0.0.0"
# SSH tunnels to ports published on an SSH host's loopback (Target.reach), closed with the session.
_OPEN = contextlib.ExitStack()
_TUNNELS: dict[tuple[str, int], str] = {}


def pytest_sessionfinish(session, exitstatus):
    _OPEN.close()


def _settings(config) -> EnvironmentSettings:
    return load_environment(REPO, config.getoption("--shipyard-env"))


def _testinfra_host(host: HostSettings):
    """testinfra's host for an inventory host: ``local://``, or ``ssh://`` with the same ssh
    options the deploy and the controller use (the inventory's user, key and known hosts)."""
    if host.connect == "@local":
        return testinfra.get_host("local://")
    # One SSH connection per host for the whole run (ControlMaster; testinfra asks for it but
    # names no socket, so each command would connect anew).
    return testinfra.get_host(f"ssh://{commands.ssh_destination(host)}",
                              ssh_extra_args=" ".join(shlex.quote(o) for o in commands.ssh_options(host)),
                              controlpath="/tmp/shipyard-verify-%%C",  # testinfra %-formats it: ssh gets %C
                              sudo=host.sudo)  # the checks read root's files, as the deploy wrote them


def release_state(settings: EnvironmentSettings, host) -> ReleaseState:
    """The host's release state (shipyard.bluegreen); a host no release touched runs blue."""
    f = host.file(f"{bluegreen.release_dir(settings.deploy_root, settings.name)}/{bluegreen.STATE_FILE}")
    return ReleaseState.of_host(f.content_string if f.exists else None, f.path, image_plan.first_version(settings) or "")[0]


def _runs(settings: EnvironmentSettings, inst: topology.Instance) -> bool:
    """Whether a deploy runs ``inst``: of a coloured service, only the live colour."""
    if inst.colour is None:
        return True
    host = _testinfra_host(inst.host)
    return inst.colour in release_state(settings, host).colours_to_run()


def pytest_generate_tests(metafunc):
    settings = _settings(metafunc.config)
    # LIMIT: the hosts a limited deploy changed (the others may be down).
    hosts = settings.limited(metafunc.config.getoption("--shipyard-limit"))
    if "service" in metafunc.fixturenames:
        pairs = [(h.name, i.name) for h in hosts for i in topology.build(settings).instances_on(h)
                 if _runs(settings, i)]
        metafunc.parametrize("target,service", pairs, indirect=["target"], scope="session")
    elif "target" in metafunc.fixturenames:
        metafunc.parametrize("target", [h.name for h in hosts], indirect=True, scope="session")


@pytest.fixture(scope="session")
def settings(request) -> EnvironmentSettings:
    return _settings(request.config)


@pytest.fixture(scope="session")
def target(request, settings) -> Target:
    host_settings = settings.host(request.param)
    return Target(settings=settings, rendered=render_host(settings, host_settings),
                  host=_testinfra_host(host_settings),
                  project_dir=commands.project_dir(settings.deploy_root, settings.name))
