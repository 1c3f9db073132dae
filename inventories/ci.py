"""The `ci` environment: what `make test` rolls out on the local Docker engine.

Ports differ from `local` so both can run side by side on one machine.
"""

SHIPYARD = {
    "name": "ci",
    "images": {"source": "local"},
    # Per machine and throw-away: its secrets are generated here on first deploy (git-ignored).
    # The API and workers take their PostgreSQL users from Vault (docs/secrets.md): `make test`
    # runs that backend end to end.
    "secrets": {"generate_missing": True, "backend": "vault"},
    # Its own project network, apart from the other environment's on the same machine.
    "network": {"subnet": "10.213.2.0/24"},
    "ports": {"edge_http": 18080, "edge_https": 18443, "edge_bind": "127.0.0.1", "api_direct": 18000,
              "postgres": 15432, "redis": 16379, "consul_http": 18500, "prometheus_http": 19090, "alertmanager_http": 19093,
              "grafana_http": 13000, "vault_https": 18200, "elasticsearch_http": 19200, "registry": 15000},
    # HTTPS at the edge with a certificate of the environment's own edge CA, and plain HTTP served as
    # well on loopback: the e2e tests, drills and benchmarks use plain HTTP (tests/e2e/test_edge_tls.py
    # the HTTPS side).
    "edge": {"tls": {"mode": "ca", "names": ["localhost"], "http": "serve"}},
    "consul": {"servers": 3},
    # The private image registry (docs/registry.md) runs here so that `make test` deploys it as any
    # host would: its image, TLS from its CA, htpasswd (tests/e2e/test_registry.py pushes and pulls
    # through it). One host builds its own images, so nothing else goes through it here.
    "registry": {"enabled": True, "names": ["127.0.0.1", "localhost"]},
    # PostgreSQL under Patroni with etcd as its lock (docs/data-tier.md), synchronous: `make test`
    # kills, partitions and switches over the leader under traffic and counts every task.
    "postgres": {"patroni": {"synchronous": True}},
    # Vault (OpenBao): initialised, unsealed and bootstrapped by every `make up` (docs/secrets.md).
    "vault": {"enabled": True},
    # The log store's stand-in keeps every line of the run in memory (docs/logs.md), ~10 KB each
    # (measured): the e2e tests and the benchmarks write a few hundred thousand, and a full
    # `make bench-logs` on a ci that ran them more (at 3 GB the stand-in spent its CPU in GC).
    "logs": {"stand_in_memory_limit_mb": 8192},
    "health": {"data_timeout_s": 120, "app_timeout_s": 120, "edge_timeout_s": 60},
    # Short waits so that tests/e2e/test_alerts.py proves an alert's whole path in well under
    # two minutes; a real environment keeps the defaults.
    "prometheus": {"scrape_interval_s": 5, "evaluation_interval_s": 5, "oldest_queued_task_max_s": 10,
                   "alerts": {"target_down_s": 10, "host_down_s": 10, "no_worker_s": 10, "config_rejected_window_s": 60,
                              "oldest_queued_s": 5, "replica_not_streaming_s": 10}},
    # The receiver tests/e2e/test_alerts.py runs while it runs, on the host's side of the
    # project network: its gateway, which Docker takes from the start of the network's dynamic
    # range (10.213.2.128, see network.dynamic_range). Nothing leaves the machine. Otherwise
    # nothing listens there and deliveries fail (counted: alertmanager_notifications_failed_total).
    "alertmanager": {"webhook_urls": ["http://10.213.2.128:19095/e2e-alerts"], "group_wait_s": 5,
                     "group_interval_s": 10},
    # The task platform's webhooks reach only this project network (a receiver a test runs on
    # its gateway, as above): the URLs the API fuzzing makes up are refused, never sent out.
    # Schedules every second: the e2e schedule test watches occurrences within its time.
    # The task kinds built into the image: the platform's demo kinds (the e2e tests use them) and
    # a team's own package from outside services/ (tests/e2e/test_user_kinds.py), found by its
    # entry point (docs/task-platform.md, "Task kinds").
    "app": {"kinds_packages": [{"path": "services/taskplatform_demo_kinds", "modules": ["taskplatform_demo_kinds"]},
                               {"path": "examples/kinds/acme_shop"}]},
    "runtime": {"webhook_allow_private_addresses": True, "webhook_allowed_networks": ["10.213.2.0/24"],
                "schedule_min_interval_seconds": 1},
}

_this_machine = [("@local", {"shipyard_host": "ci"})]
edge = _this_machine
app = _this_machine
data = _this_machine
control = _this_machine
observability = _this_machine
registry = _this_machine
