"""``SHIPYARD.node``: the per-host agents (node exporter; cAdvisor under the official images)."""

from __future__ import annotations

from pydantic import Field

from shipyard.component import Strict


class NodeSettings(Strict):
    exporter: bool = Field(True, description="run a node exporter on every host (its disk, memory, CPU and load)")
    cadvisor: bool = Field(True, description="run cAdvisor on every host (containers' resource use); official images "
                                             "only: no local image exists, so it is never rendered under "
                                             "images.source 'local'")
