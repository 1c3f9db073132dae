"""What already holds a port on a host (shipyard.hostports), read from /proc/net/tcp* and docker ps."""

from shipyard import hostports
from shipyard.inventory import load_environment

# Listening: 127.0.0.1:8000 (0x1F40) and 0.0.0.0:9999 (0x270F); established: 127.0.0.1:5555.
PROC_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 00000000:270F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:15B3 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1
"""
# Listening on [::]:18080 (0x46A0).
PROC_TCP6 = """  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:46A0 00000000000000000000000000000000:0000 0A 00000000:00000000
"""
PS = ("shipyard-ci\tshipyard-ci-edge-1\t127.0.0.1:18080->80/tcp\n"
      "other\tother-web-1\t127.0.0.1:15432->5432/tcp, 6000/tcp\n"
      "\tloose\t0.0.0.0:26379->26379/tcp, [::]:26379->26379/tcp\n"
      # Consecutive ports, as docker ps lists them: one range (Consul's server and LAN gossip ports).
      "shipyard-multi\tshipyard-multi-consul-2-1\t10.0.0.2:8300-8301->8300-8301/tcp, 10.0.0.2:8301->8301/udp\n")


def test_listeners_are_decoded_from_proc_net_tcp():
    assert hostports.listeners(PROC_TCP + PROC_TCP6) == [("127.0.0.1", 8000), ("0.0.0.0", 9999), ("::", 18080)]


def test_published_ports_are_read_from_docker_ps():
    assert hostports.published_by_containers(PS) == [
        ("shipyard-ci", "shipyard-ci-edge-1", "127.0.0.1", 18080), ("other", "other-web-1", "127.0.0.1", 15432),
        ("", "loose", "0.0.0.0", 26379), ("", "loose", "::", 26379),
        ("shipyard-multi", "shipyard-multi-consul-2-1", "10.0.0.2", 8300), ("shipyard-multi", "shipyard-multi-consul-2-1", "10.0.0.2", 8301)]


def test_the_environments_own_ports_are_not_clashes_but_anything_else_is(repo):
    settings = load_environment(repo, "ci", {})
    held = hostports.holders(PROC_TCP + PROC_TCP6, PS, settings.compose_project)
    lines = hostports.clashes(settings, settings.hosts[0], held)
    # 18080 is ci's own edge (the [::] listener is its docker-proxy); 15432 another project's container.
    assert lines == ["ports.postgres (postgres) publishes 127.0.0.1:15432, which container other-web-1 already "
                     "holds (127.0.0.1:15432)"]
    assert hostports.clashes(settings, settings.hosts[0], hostports.holders("", "", settings.compose_project)) == []


def test_a_process_of_the_host_on_a_wanted_port_is_a_clash(repo):
    settings = load_environment(repo, "ci", {"SHIPYARD_PORTS__EDGE_HTTP": "9999"})
    lines = hostports.clashes(settings, settings.hosts[0], hostports.holders(PROC_TCP, "", settings.compose_project))
    assert lines == ["ports.edge_http (edge) publishes 127.0.0.1:9999, which a process of the host already holds "
                     "(0.0.0.0:9999)"]
