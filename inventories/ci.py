"""The `ci` environment: what `make test` rolls out on the local Docker engine.

Ports differ from `local` so both can run side by side on one machine.
"""

SHIPYARD = {
    "name": "ci",
    "images": {"source": "local"},
    # Per machine and throw-away: its secrets are generated here on first deploy (git-ignored).
    "secrets": {"generate_missing": True},
    # Its own project network, apart from the other environment's on the same machine.
    "network": {"subnet": "10.213.2.0/24"},
    "ports": {"edge_http": 18080, "edge_bind": "127.0.0.1", "api_direct": 18000,
              "postgres": 15432, "redis": 16379, "consul_http": 18500, "prometheus_http": 19090, "alertmanager_http": 19093},
    "consul": {"servers": 3},
    "health": {"data_timeout_s": 120, "app_timeout_s": 120, "edge_timeout_s": 60},
}

_this_machine = [("@local", {"shipyard_host": "ci"})]
edge = _this_machine
app = _this_machine
data = _this_machine
control = _this_machine
observability = _this_machine
