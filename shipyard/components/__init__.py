"""The component registry: one line per component. The core iterates ``COMPONENTS`` (in this
order: it is also the order of services in each compose file) and never names one."""

from __future__ import annotations

from shipyard.component import Component
from shipyard.components.alertmanager import COMPONENT as ALERTMANAGER
from shipyard.components.consul import COMPONENT as CONSUL
from shipyard.components.edge import COMPONENT as EDGE
from shipyard.components.grafana import COMPONENT as GRAFANA
from shipyard.components.elk import COMPONENT as ELK
from shipyard.components.etcd import COMPONENT as ETCD
from shipyard.components.node import COMPONENT as NODE
from shipyard.components.postgres import COMPONENT as POSTGRES
from shipyard.components.prometheus import COMPONENT as PROMETHEUS
from shipyard.components.redis import COMPONENT as REDIS
from shipyard.components.registry import COMPONENT as REGISTRY
from shipyard.components.taskplatform import COMPONENT as TASKPLATFORM
from shipyard.components.vault import COMPONENT as VAULT

COMPONENTS: tuple[Component, ...] = (REGISTRY, POSTGRES, ETCD, REDIS, CONSUL, VAULT, TASKPLATFORM, EDGE, ALERTMANAGER, PROMETHEUS, GRAFANA, NODE, ELK)


def component_named(name: str) -> Component:
    for comp in COMPONENTS:
        if comp.name == name:
            return comp
    raise KeyError(f"no component {name!r}; registered: {', '.join(c.name for c in COMPONENTS)}")
