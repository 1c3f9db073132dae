"""The edge: nginx in front of the task API, the only port meant for users (``ports.edge_http``
on ``ports.edge_bind``), and behind it the router, a second nginx that sends each request to the
API of the live colour (blue-green, shipyard.bluegreen) and serves the preview route.

Two processes because a release's switch is an nginx reload, and a reload closes the idle
keep-alive connections of the old workers: a request a client sends on one as it closes is lost.
Users' connections end at the edge, which a release never reloads; the router takes one
connection per request from the edge, so its reload drops nothing.

Each nginx serves ``stub_status`` on a private port (``STATUS_PORT``, not published, answered
to the project network only), read by an nginx exporter beside it (``edge-exporter``,
``router-exporter``) that Prometheus scrapes on the project network."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from shipyard.component import Component, ConfigDir, Health, Image, Metrics, Port, Service, Wait

CONF = "/etc/nginx/shipyard"
# The release's routing file (live.conf, written by release_routing below) is mounted here.
ROUTING = "/etc/nginx/shipyard-release"
ROUTER_PORT = 8080  # the router's user route (not published: the edge's upstream)
PREVIEW_PORT = 8081  # the router's preview route: the idle colour, for a release's smoke test (not published)
STATUS_PORT = 8090  # each nginx's stub_status, for its exporter (not published; project network only)
EXPORTER_PORT = 9113
EXPORTER_UID = 65534  # nobody, as in the official exporter image


def _exporter(name: str, of: str) -> Service:
    return Service(name, "edge", "edge", "nginx-exporter", EXPORTER_UID, serves_clients=False,
                   metrics=Metrics(EXPORTER_PORT), waits=(Wait(of, "service_started"),))


def compose_service(ctx, inst) -> dict[str, Any]:
    if inst.service.name.endswith("-exporter"):
        nginx = inst.service.name.removesuffix("-exporter")
        return {"command": [f"-web.listen-address=:{EXPORTER_PORT}", f"-nginx.scrape-uri=http://{nginx}:{STATUS_PORT}/stub_status",
                            # nginx may start after it: retry rather than exit.
                            "-nginx.retries=30", "-nginx.retry-interval=2s"],
                "mem_limit": "32m"}
    conf = "router.conf" if inst.service.name == "router" else "nginx.conf"
    return {"command": ["nginx", "-c", f"{CONF}/{conf}", "-g", "daemon off;"]}


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def template_context(ctx) -> dict[str, Any]:
    # The API in each colour (blue-green, shipyard.bluegreen): users reach $live_colour's,
    # the preview route $preview_colour's; both variables come from the release's live.conf.
    colours: dict[str, list] = {}
    for inst in ctx.instances_of("taskplatform", "api"):
        endpoint = ctx.address(inst)
        if endpoint not in colours.setdefault(inst.colour, []):
            colours[inst.colour].append(endpoint)
    # An API reached by its compose service name (one host) gets a new address whenever its
    # container restarts (a crash, `docker restart`), which an upstream block, resolved once at
    # load, would not follow: that name is resolved per request through Docker's DNS instead.
    # Addresses (several hosts) never change: they keep upstream blocks and their keepalive.
    by_name = all(len(servers) == 1 and not _is_address(servers[0].host) for servers in colours.values())
    port = next(iter(colours.values()))[0].port
    return {"env": ctx.env, "api_colours": colours, "api_by_name": by_name, "api_port": port,
            "conf": CONF, "routing": ROUTING, "preview_port": PREVIEW_PORT, "router_port": ROUTER_PORT,
            "status_port": STATUS_PORT, "network": str(ctx.settings.network.subnet)}


def release_routing(live: str, preview: str) -> bytes:
    return (f"# Written by a release (make release / rollback); nginx reloads it on a switch.\n"
            f"set $live_colour {live};\nset $preview_colour {preview};\n").encode()


COMPONENT = Component(
    name="edge",
    folder=Path(__file__).parent,
    uses=("taskplatform",),
    images=(Image("nginx", official="nginx:1.22.1", local="shipyard/nginx:1.22",
                  local_context="shipyard/components/edge/image"),
            # Debian bookworm ships 0.11.0: the same version upstream.
            Image("nginx-exporter", official="nginx/nginx-prometheus-exporter:0.11.0", local="shipyard/nginx-exporter:0.11",
                  local_context="shipyard/components/edge/exporter-image")),
    config_dirs=(ConfigDir("nginx", CONF),),
    services=(
        Service("router", "edge", "edge", "nginx", 0, config_dir="nginx", serves_clients=False,
                health=Health(("curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{ROUTER_PORT}/router/health"),
                              start_period_s=30),
                # A switch rewrites its routing file and reloads it; and nginx resolves upstream
                # names at (re)load: new API containers on other hosts have new addresses.
                reload_signal="HUP", routing_mount=ROUTING),
        Service("edge", "edge", "edge", "nginx", 0, config_dir="nginx",
                port=Port(80, "edge_http", 8080, "host port the edge publishes HTTP on", publish="public",
                          bind_setting="edge_bind"),
                health=Health(("curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1/edge/health"), start_period_s=30),
                waits=(Wait("router"),)),
        _exporter("router-exporter", "router"),
        _exporter("edge-exporter", "edge"),
    ),
    compose_service=compose_service,
    template_context=template_context,
    release_routing=release_routing,
)
