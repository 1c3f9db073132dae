"""The `local` environment: the whole stack on this machine (`make up`). The embedded default.

Groups are roles (edge, app, data); SHIPYARD holds the settings (shipyard/settings.py).
Any setting can be overridden with SHIPYARD_* variables, e.g. SHIPYARD_PORTS__EDGE_HTTP=9090.
"""

SHIPYARD = {
    "name": "local",
    # No registry answers on these machines: build images from Debian packages.
    "images": {"source": "local"},
    # Per machine and throw-away: its secrets are generated here on first deploy (git-ignored).
    "secrets": {"generate_missing": True},
    # Its own project network, apart from the other environment's on the same machine.
    "network": {"subnet": "10.213.1.0/24"},
    "ports": {"edge_http": 8080, "edge_https": 8443, "edge_bind": "127.0.0.1", "api_direct": 8000,
              "postgres": 5432, "redis": 6379, "consul_http": 8500, "prometheus_http": 9090, "alertmanager_http": 9093},
    # HTTPS at the edge with a certificate of the environment's own edge CA, and plain HTTP served as
    # well on loopback: the e2e tests, drills and benchmarks use plain HTTP (tests/e2e/test_edge_tls.py
    # the HTTPS side).
    "edge": {"tls": {"mode": "ca", "names": ["localhost"], "http": "serve"}},
    # Vault (OpenBao): initialised, unsealed and bootstrapped by every `make up` (docs/secrets.md).
    "vault": {"enabled": True},
}

_this_machine = [("@local", {"shipyard_host": "local"})]
edge = _this_machine
app = _this_machine
data = _this_machine
control = _this_machine
observability = _this_machine
