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

    def section(self, key: str) -> Any:
        """A settings section (``postgres``, ``app``...)."""
        return getattr(self.settings, key)

    def instances_of(self, component: str, service: str | None = None) -> tuple[topology.Instance, ...]:
        return topology.instances_of(self.settings, component, service)

    def instance_names(self, component: str, service: str | None = None) -> tuple[str, ...]:
        return topology.instance_names(self.settings, component, service)

    def endpoints(self, component: str, service: str | None = None) -> tuple[topology.Endpoint, ...]:
        """Every client-facing instance as this host reaches it."""
        return topology.endpoints(self.settings, component, service, self.host)

    def address(self, inst: topology.Instance) -> topology.Endpoint:
        """How this host reaches ``inst``."""
        return topology.address(self.settings, inst, self.host)

    def release_version(self, inst: topology.Instance) -> str:
        """The version ``inst`` runs, as compose interpolates it from the release state (the
        component's versioned image's tag; shipyard.bluegreen)."""
        image = next(i for i in self.component.images if i.tag)
        return f"${{{bluegreen.version_variable(inst.colour)}:-{image.tag(self.settings)}}}"

    def announced(self, inst: topology.Instance) -> topology.Endpoint:
        """The address ``inst`` gives others for itself."""
        return topology.announced(self.settings, inst)

    def peer_advertised(self, inst: topology.Instance) -> str | None:
        """The address ``inst`` advertises to its peers (None: its container address will do)."""
        return topology.peer_advertised(self.settings, inst)

    def peer_endpoints(self, component: str, service: str, port: int) -> tuple[topology.Endpoint, ...]:
        """Every instance of a service as its peers reach it at one of its peer ports."""
        return topology.peer_endpoints(self.settings, component, service, port)
