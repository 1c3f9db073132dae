"""What a component's render hooks see: the settings, the host being rendered, and the
topology's answers from that host's point of view. Components read addresses only through
this, so every address they hand out comes from ``shipyard.topology``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard import bluegreen, topology
from shipyard.component import Component
from shipyard.settings import EnvironmentSettings, HostSettings


@dataclass(frozen=True)
class RenderContext:
    settings: EnvironmentSettings
    host: HostSettings
    component: Component

    @property
    def env(self) -> str:
        return self.settings.name

    @property
    def topology(self) -> topology.Topology:
        """The environment's topology (built once per settings; shipyard.topology.build)."""
        return topology.build(self.settings)

    def section(self, key: str) -> Any:
        """A settings section (``postgres``, ``app``...)."""
        return getattr(self.settings, key)

    def instances_of(self, component: str, service: str | None = None) -> tuple[topology.Instance, ...]:
        return self.topology.instances_of(component, service)

    def instance_names(self, component: str, service: str | None = None) -> tuple[str, ...]:
        return self.topology.instance_names(component, service)

    def endpoints(self, component: str, service: str | None = None) -> tuple[topology.Endpoint, ...]:
        """Every client-facing instance as this host reaches it."""
        return self.topology.endpoints(component, service, self.host)

    def address(self, inst: topology.Instance) -> topology.Endpoint:
        """How this host reaches ``inst``."""
        return self.topology.address(inst, self.host)

    def release_version(self, inst: topology.Instance) -> str:
        """The version ``inst`` runs, as compose interpolates it from the release state (the
        component's versioned image's tag; shipyard.bluegreen)."""
        image = next(i for i in self.component.images if i.tag)
        return f"${{{bluegreen.version_variable(inst.colour)}:-{image.tag(self.settings)}}}"

    def announced(self, inst: topology.Instance) -> topology.Endpoint:
        """The address ``inst`` gives others for itself."""
        return self.topology.announced(inst)

    def peer_advertised(self, inst: topology.Instance) -> str | None:
        """The address ``inst`` advertises to its peers (None: its container address will do)."""
        return self.topology.peer_advertised(inst)

    def peer_endpoints(self, component: str, service: str, port: int) -> tuple[topology.Endpoint, ...]:
        """Every instance of a service as its peers reach it at one of its peer ports."""
        return self.topology.peer_endpoints(component, service, port)
