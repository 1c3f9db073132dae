"""The edge: nginx in front of the task API (every API instance of the environment), the only
port meant for users (``ports.edge_http`` on ``ports.edge_bind``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.component import Component, ConfigDir, Health, Image, Port, Service

CONF = "/etc/nginx/shipyard"


def compose_service(ctx, inst) -> dict[str, Any]:
    return {"command": ["nginx", "-c", f"{CONF}/nginx.conf", "-g", "daemon off;"]}


def template_context(ctx) -> dict[str, Any]:
    return {"env": ctx.env, "api_servers": ctx.endpoints("taskplatform", "api")}


COMPONENT = Component(
    name="edge",
    folder=Path(__file__).parent,
    uses=("taskplatform",),
    images=(Image("nginx", official="nginx:1.22.1", local="shipyard/nginx:1.22",
                  local_context="shipyard/components/edge/image"),),
    config_dirs=(ConfigDir("nginx", CONF),),
    services=(
        Service("edge", "edge", "edge", "nginx", 0, config_dir="nginx",
                port=Port(80, "edge_http", 8080, "host port the edge publishes HTTP on", publish="public",
                          bind_setting="edge_bind"),
                health=Health(("curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1/edge/health"), start_period_s=30),
                # nginx resolves upstream names at (re)load: new API containers have new addresses.
                reload_signal="HUP"),
    ),
    compose_service=compose_service,
    template_context=template_context,
)
