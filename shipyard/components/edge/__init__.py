"""The edge: nginx in front of the task API, the only port meant for users (``ports.edge_http``
on ``ports.edge_bind``), and behind it the router, a second nginx that sends each request to the
API of the live colour (blue-green, shipyard.bluegreen) and serves the preview route.

Two processes because a release's switch is an nginx reload, and a reload closes the idle
keep-alive connections of the old workers: a request a client sends on one as it closes is lost.
Users' connections end at the edge, which a release never reloads; the router takes one
connection per request from the edge, so its reload drops nothing.

TLS at the edge (``SHIPYARD.edge.tls``, settings.py; docs/security.md): with a mode other than
``off`` the edge also serves HTTPS (``ports.edge_https``, Mozilla's intermediate profile), its
certificate and key delivered as secret files (certificates.py), and its plain port either
redirects to it or — test environments on loopback — serves as well. The hops behind the edge
(router, API) stay plain HTTP on the host's project network.

Each nginx serves ``stub_status`` on a private port (``STATUS_PORT``, not published, answered
to the project network only), read by an nginx exporter beside it (``edge-exporter``,
``router-exporter``) that Prometheus scrapes on the project network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.component import Component, ConfigDir, Health, Image, Metrics, Port, Rotation, SecretFile, Service, Wait
from shipyard import tls as shared_tls
from shipyard.components.edge import certificates
from shipyard.components.edge.settings import EdgeSettings

CONF = "/etc/nginx/shipyard"
# The release's routing file (live.conf, written by release_routing below) is mounted here.
ROUTING = "/etc/nginx/shipyard-release"
ROUTER_PORT = 8080  # the router's user route (not published: the edge's upstream)
PREVIEW_PORT = 8081  # the router's preview route: the idle colour, for a release's smoke test (not published)
STATUS_PORT = 8090  # each nginx's stub_status, for its exporter (not published; project network only)
EXPORTER_PORT = 9113
EXPORTER_UID = 65534  # nobody, as in the official exporter image
SECRETS = "/run/secrets"  # the edge's secret files (shipyard.render.compose.SECRETS_DIR)
CERT_FILE, KEY_FILE = f"{SECRETS}/edge.crt", f"{SECRETS}/edge.key"
# Paths whose answers carry a secret (a new API key, a webhook's signing secret, the tenant's
# callback secret) or a receiver's credential (a webhook URL's token): never compressed, so a
# BREACH-style attacker who injects text into a request and watches the compressed length on the
# wire learns nothing of them (the API's own paths: services/taskplatform/routes/).
UNCOMPRESSED = r"^/v1/(api-keys|webhooks|callbacks/secret)(/|$)"
# The API's docs UI (services/taskplatform/routes/docs.py): Swagger UI's page loads its script and
# styles from /docs/assets/ (same origin, no CDN) and starts it with an inline <script>, which a
# policy without 'unsafe-inline' would block; Swagger UI also sets inline styles and data: images.
DOCS_PATH = "/docs"
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
# Everything else the edge answers is JSON (or an nginx error page): nothing to load, nothing to frame.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def tls_on(settings) -> bool:
    return settings.edge.tls.on


# A renewed certificate is taken by a reload of the running edge (its users' connections stay
# open; a reload only closes idle keep-alive ones), not by recreating it.
_RELOAD = Rotation(apply=("nginx", "-c", f"{CONF}/nginx.conf", "-s", "reload"))
_TLS_FILES = (SecretFile("edge.key", certificates.TLS, template="secrets/edge-key.pem.j2", rotation=_RELOAD, when=tls_on),
              SecretFile("edge.crt", certificates.TLS, template="secrets/edge-chain.pem.j2", rotation=_RELOAD,
                         when=tls_on))


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
    by_name = all(len(servers) == 1 and not shared_tls.is_ip_address(servers[0].host) for servers in colours.values())
    if not by_name:
        # Several hosts: this host's own APIs by the address their host publishes them on too. A
        # name in an upstream block must resolve when nginx loads it, which the idle colour's
        # (not running between releases) does not, and it would not follow a restart either.
        colours = {}
        for inst in ctx.instances_of("taskplatform", "api"):
            endpoint = ctx.announced(inst)
            if endpoint not in colours.setdefault(inst.colour, []):
                colours[inst.colour].append(endpoint)
    port = next(iter(colours.values()))[0].port
    tls = ctx.settings.edge.tls
    https_port = ctx.settings.ports.edge_https
    return {"env": ctx.env, "api_colours": colours, "api_by_name": by_name, "api_port": port,
            "conf": CONF, "routing": ROUTING, "preview_port": PREVIEW_PORT, "router_port": ROUTER_PORT,
            "status_port": STATUS_PORT, "network": str(ctx.settings.network.subnet),
            "tls": tls.on, "tls_mode": tls.mode, "redirect": tls.redirects, "hsts_max_age_s": tls.hsts_max_age_s,
            # The port users' browsers use: the redirect names it unless it is HTTPS's own (443).
            "https_authority_port": "" if https_port == 443 else f":{https_port}",
            "cert_file": CERT_FILE, "key_file": KEY_FILE, "uncompressed": UNCOMPRESSED,
            "docs_path": DOCS_PATH, "docs_csp": DOCS_CSP, "api_csp": API_CSP,
            "key_of": certificates.key_of, "chain_of": certificates.chain_of}


def release_routing(live: str, preview: str) -> bytes:
    return (f"# Written by a release (make release / rollback); nginx reloads it on a switch.\n"
            f"set $live_colour {live};\nset $preview_colour {preview};\n").encode()


COMPONENT = Component(
    name="edge",
    folder=Path(__file__).parent,
    settings={"edge": EdgeSettings},
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
                extra_ports=(Port(443, "edge_https", 8443, "host port the edge publishes HTTPS on (edge.tls.mode "
                                                           "other than 'off')", publish="public",
                                  bind_setting="edge_bind", when=tls_on),),
                # Plain HTTP inside the container, whatever edge.tls says: /edge/health answers on
                # port 80 in every mode (the redirect leaves it out), and a certificate nginx cannot
                # load stops nginx from starting at all, so the probe needs no TLS of its own.
                health=Health(("curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1/edge/health"), start_period_s=30),
                # nginx's master runs as root and reads the key before its workers drop to nginx.
                secrets=_TLS_FILES,
                waits=(Wait("router"),)),
        _exporter("router-exporter", "router"),
        _exporter("edge-exporter", "edge"),
    ),
    compose_service=compose_service,
    template_context=template_context,
    release_routing=release_routing,
    held_secrets=(certificates.CA_CERT, certificates.CA_KEY, certificates.KEY),
    supplied_secrets=(certificates.KEY,),
    issued_secrets={certificates.TLS: certificates.issue_bundle},
    # Every deploy: a certificate whose names, issuer or expiry no longer fit is re-issued first.
    preflight=certificates.preflight,
    checkout_problems=certificates.checkout_problems,
)
