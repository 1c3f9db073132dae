# Rendered by Shipyard (shipyard/components/consul): one Consul server of production.
# The node name, the bind and advertised addresses and the secret files (gossip key, ACL
# tokens) are given on the command line by the compose service.
server           = true
bootstrap_expect = 3
datacenter       = "dc1"
data_dir         = "/consul/data"
client_addr      = "0.0.0.0"
retry_join       = ["10.0.1.11:8301", "10.0.1.12:8301", "10.0.2.21:8301"]
log_level        = "WARN"
disable_update_check = true
performance {
  # Raft's timings at their tightest (Consul's docs recommend 1 for production servers; the
  # default 5 was tuned for t2.micro instances out of CPU credits): leader election and a lost
  # leader's detection within ~1 s, not ~5 s — the first deploy waits on it.
  raft_multiplier = 1
}
ui_config {
  enabled = true
}
telemetry {
  # /v1/agent/metrics?format=prometheus (Prometheus scrapes it with a token of agent:read). A
  # gauge no longer set (a leader's consul_autopilot_healthy after it steps down) goes after this.
  prometheus_retention_time = "30s"
  disable_hostname          = true
}
ports {
  # Runtime config is read over HTTP; nothing here resolves names through Consul.
  dns = -1
}
acl {
  enabled        = true
  default_policy = "deny"
  # A server that loses its leader keeps the policies it has: readers keep reading.
  down_policy    = "extend-cache"
}
