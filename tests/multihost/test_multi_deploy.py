"""`make deploy ENV=multi` on the three test hosts (issue 25): hosts with no package mirror and no
registry of the internet get every image Shipyard builds through the environment's own registry
(docs/registry.md). The deploying machine builds each image once (here: `make test`'s ci rollout
built them already on this machine's engine, so none is rebuilt), the registry's image goes to
h1 over SSH and the registry starts there first, this machine pushes the others through an SSH
tunnel, every host pulls what its services run; then the rollout as on one host.

Checked as a user would: the deploy succeeds and each host runs its share, healthy; no host built
anything; each host holds the very images this machine built; no registry credential stays on
any host; a second deploy pulls nothing and changes nothing; the environment's Prometheus (h3)
sees a worker on h2 stop and start (federated from h2's own Prometheus); a release and a rollback
under load through the edge fail no request; `make verify` passes on every host over SSH; `make
down` leaves nothing.

Needs this machine's engine with the images built (`make test` runs it after the ci rollout;
skipped otherwise)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shipyard import audit, image_plan, topology
from shipyard.apply import image_ship
from shipyard.apply.image_delivery import FETCH_DIR
from shipyard.controller.hosts import HostControl, HostView, health
from shipyard.inventory import load_environment
from tests import testhosts

REPO = Path(__file__).resolve().parents[2]
DEPLOY_TIMEOUT_S = 1800


def deploy() -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "shipyard", "up", "--env", "multi"], cwd=REPO, capture_output=True,
                          text=True, timeout=DEPLOY_TIMEOUT_S)
    return done, time.monotonic() - started


@pytest.fixture(scope="module")
def settings():
    made = load_environment(REPO, "multi", {})
    if image_ship.local_id("shipyard/registry:2.8") is None:
        pytest.skip("this machine's engine holds no shipyard images: `make up ENV=ci` builds them "
                    "(make test runs these tests after the ci rollout)")
    return made


@pytest.fixture(scope="module")
def hosts(settings):
    with testhosts.multi_hosts() as made:
        yield made


@pytest.fixture(scope="module")
def cold(hosts, settings):
    done, took = deploy()
    print(f"\ncold deploy of multi on three hosts: {took:.1f}s", flush=True)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def _refs(settings, host) -> list[str]:
    needed = [(i.component, i.service.image) for i in topology.build(settings).instances_on(host)]
    return image_plan.delivered_refs(settings, needed, image_plan.first_version(settings))


def test_a_cold_deploy_builds_here_once_and_every_host_runs_its_share_from_the_registry(hosts, settings, cold):
    assert "registry first: the other images come through it" in cold
    assert "shipped over SSH" in cold
    topo = topology.build(settings)
    for host in settings.hosts:
        view = HostView(settings, host)
        running_colours = view.release_state()[0].colours_to_run()
        wanted = {i.name for i in topo.instances_on(host)
                  if not i.service.one_shot and (i.colour is None or i.colour in running_colours)}
        running = {}
        for inst in wanted:
            running[inst] = [health(c) for c in view.containers_of(inst)]
        assert all(states and all(s in ("healthy", "running") for s in states) for states in running.values()), \
            (host.name, running)
        box = hosts[host.address]
        # Nothing built on the host: no build contexts shipped, no debootstrap base.
        assert box.ssh(f"test ! -e {settings.deploy_root}/build && ! docker image inspect shipyard/base:bookworm "
                       ">/dev/null 2>&1", check=False).returncode == 0, host.name
        # The very images this machine built (same ids), under the names compose runs.
        for ref in _refs(settings, host):
            assert image_ship.remote_id(host, ref) == image_ship.local_id(ref), (host.name, ref)


def test_no_registry_credential_stays_on_any_host(hosts, settings, cold):
    for host in settings.hosts:
        box = hosts[host.address]
        config = box.ssh("cat /root/.docker/config.json 2>/dev/null || true").stdout
        assert settings.registry.names[0] not in config, (host.name, config)
        assert box.ssh(f"test ! -e {settings.deploy_root}/{FETCH_DIR}-{settings.name}", check=False).returncode == 0


def test_a_second_deploy_pulls_nothing_and_changes_nothing(hosts, settings, cold):
    done, took = deploy()
    print(f"\nno-op deploy of multi on three hosts: {took:.1f}s", flush=True)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert "pull " not in out and "shipped over SSH" not in out and "[deploying machine] build " not in out, out[-6000:]
    total = len({ref for host in settings.hosts for ref in _refs(settings, host)})
    assert f"every host holds the {total} images it runs: nothing to push" in out, out[-6000:]
    # pyinfra's summary: on all three hosts, the pull step and the project's files (with the
    # release routing and the registry's CA) without a change; and no service found stale on
    # any host (the converge says why before it acts).
    for operation in (r"images pulled from registry \(\d+\)", r"project files and secrets in \S+.*?"):
        assert re.search(rf"^\s+{operation}\s+3\s+-\s+-\s+3\s*$", out, re.M), (operation, out[-6000:])
    assert not re.search(r"^\[\S+\] tiers? ", out, re.M), out[-6000:]


@pytest.mark.parametrize("name", ["h3", "h2"])
def test_exec_through_the_ssh_tunnel_returns_all_of_its_output(hosts, settings, cold, name):
    """docker-py's own exec lost the first bytes of the output through SSH's forwarding (5 of 30
    came back empty): make verify, status and the drills read what a command printed. h3's
    engine is a forwarded socket (root), h2's the relay of `sudo docker system dial-stdio`."""
    host = next(h for h in settings.hosts if h.name == name)
    view = HostView(settings, host)
    container = view.container_of(f"redis-sentinel-{name[1]}")
    results = [container.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"], demux=True) for _ in range(30)]
    assert {(r.exit_code, r.output) for r in results} == {(3, (b"out\n", b"err\n"))}


def test_h2_deployed_as_a_user_with_sudo_holds_roots_files_and_nothing_of_the_users(hosts, settings, cold):
    """multi reaches h2 as `shipyard`, root by sudo: the deploy logged in as that user, wrote the
    project as root would (no file of the user's), and left no upload of the user's behind."""
    h2 = next(h for h in settings.hosts if h.name == "h2")
    assert (h2.ssh_user, h2.sudo) == (testhosts.DEPLOY_USER, True)
    box = hosts[h2.address]
    assert f"Accepted publickey for {testhosts.DEPLOY_USER} from" in (box.dir / "sshd.log").read_text()
    owned = box.ssh(f"find {settings.deploy_root} /tmp -xdev -user {testhosts.DEPLOY_USER} -print 2>/dev/null | head",
                    check=False).stdout
    assert owned == "", owned
    secrets_dir = f"{settings.deploy_root}/{settings.name}/secrets"
    modes = box.ssh(f"find {secrets_dir} -type f -printf '%u %m %p\\n'").stdout.split("\n")
    assert [m for m in modes if m] and all(m.split()[1] == "400" for m in modes if m), modes


def _h2s_wal_receiver(settings) -> str:
    """What h2's PostgreSQL replica says of its stream: status|sender host|sender port."""
    replica = HostView(settings, settings.host("h2")).container_of("postgres-replica-1")
    result = replica.exec_run(["psql", "host=127.0.0.1 user=replicator dbname=postgres "
                               "passfile=/run/secrets/replication_pgpass", "-qtAX", "-c",
                               "SELECT status, sender_host, sender_port FROM pg_stat_wal_receiver"])
    return (result.output or b"").decode(errors="replace").strip()


def test_h2s_postgresql_replica_streams_from_h3_across_hosts_and_may_take_over(hosts, settings, cold):
    """The data group lists h3 then h2: PostgreSQL's first node and pgBackRest's repository server
    on h3, a replica on h2 streaming from h3's address (the port h3 publishes there), a failover
    candidate like the first: no repository volume on h2, the nodes reach the server over TLS."""
    h2, h3 = settings.host("h2"), settings.host("h3")
    assert _h2s_wal_receiver(settings) == f"streaming|{h3.address}|5432"
    assert not [v.name for v in HostView(settings, h2).docker.volumes.list() if "pgbackrest" in v.name]
    assert _running(settings, h3, "pgbackrest-repo") and not _running(settings, h2, "pgbackrest-repo")
    cluster = _patroni(h2, "/cluster")
    assert {m["name"]: bool((m.get("tags") or {}).get("nofailover")) for m in cluster["members"]} == {
        "postgres": False, "postgres-replica-1": False}, cluster
    status = _shipyard("status", "--env", "multi")
    assert re.search(r"postgres-replica-1 .*Patroni replica of postgres", status.stdout), status.stdout[-3000:]
    assert "nofailover" not in status.stdout


def _patroni(host, path: str) -> dict:
    """Patroni's REST API of the node on ``host`` (reads need no credentials), from this machine."""
    import requests

    return requests.get(f"http://{host.address}:8008{path}", timeout=3).json()


def _role(host) -> tuple[str, int | None]:
    """(role, timeline) of the node on ``host`` as its Patroni says; ("?", None) when it does not answer."""
    try:
        state = _patroni(host, "/patroni")
    except (OSError, ValueError):
        return "?", None
    role = {"master": "primary"}.get(state.get("role"), state.get("role", "?"))  # Patroni 3.0 says master
    return role, state.get("timeline")


def test_make_verify_passes_on_every_host_over_ssh(hosts, settings, cold):
    """`make deploy` ends with `make verify`: the testinfra suite over SSH, each host its own part."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/infra",
                           "--shipyard-env=multi"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert re.search(r"\d+ passed", done.stdout) and "failed" not in done.stdout.splitlines()[-1], done.stdout[-2000:]


def _query(base: str, promql: str) -> list[dict]:
    import requests

    answer = requests.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    answer.raise_for_status()
    return answer.json()["data"]["result"]


def test_the_environments_prometheus_sees_a_worker_stop_and_start_on_another_host(hosts, settings, cold):
    """Prometheus runs on h3; the workers on h1 and h2 are scraped there by each host's own
    Prometheus and federated: the environment's Prometheus follows a worker of h2 stopping and
    starting again, and no target or worker alert is pending while they all run."""
    from shipyard.controller.ssh import port_tunnel
    from tests.waiting import wait_for

    topo = topology.build(settings)
    h2, h3 = settings.host("h2"), settings.host("h3")
    bind, port = topo.published(h3, "prometheus")
    view = HostControl(settings, h2)
    running = [i for i in topo.instances_on(h2) if i.service.name == "worker"
               and any(c.status == "running" for c in view.containers_of(i.name))]
    assert running, "no worker runs on h2"
    worker = running[0]
    container = view.container_of(worker.name)
    with port_tunnel(h3, bind, port, "Prometheus on h3") as address:
        base = f"http://{address}"
        h2_workers = f'up{{job="worker", host="h2", colour="{worker.colour}"}} == 1'
        wait_for("h2's worker up in the environment's Prometheus", lambda: _query(base, h2_workers), 120)
        # Every target of every host answers (an alert pending since the deploy clears once it does).
        wait_for("no target, host or worker alert", lambda: not _query(
            base, 'ALERTS{alertname=~"NoWorkerConsuming|TargetDown|HostDown"}'), 120)
        view.stop(container)
        try:
            # Its name no longer resolves on h2; h2's Prometheus keeps the target it last found and
            # fails its scrapes (up 0), as on one host: what NoWorkerConsuming counts is up == 1.
            wait_for("h2's stopped worker not up in the environment's Prometheus",
                     lambda: not _query(base, h2_workers), 120)
            assert _query(base, 'up{job="worker", host="h1"} == 1'), "h1's workers went too"
        finally:
            view.start(container)
        wait_for("h2's started worker back in the environment's Prometheus", lambda: _query(base, h2_workers), 120)


def _shipyard(*args: str) -> subprocess.CompletedProcess:
    # A short watch: the release's own steps are what this checks, not the watch's length.
    env = {**os.environ, "SHIPYARD_RELEASE__WATCH_SECONDS": "10"}
    return subprocess.run([sys.executable, "-m", "shipyard", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=DEPLOY_TIMEOUT_S, env=env)


def _answers_after(load, since: float, count: int = 40) -> None:
    from tests.waiting import wait_for

    wait_for(f"{count} answers through the edge", lambda: sum(1 for t, _, _ in load.answers if t >= since) >= count, 60)


def _running(settings, host, service: str) -> bool:
    return any(c.status == "running" for c in HostView(settings, host).containers_of(service))


def test_a_release_and_a_rollback_across_both_app_hosts_under_load_fail_no_request(hosts, settings, cold):
    """`make release` and `make rollback` on three hosts: the new colour started on h1 and h2,
    the routers switched at once, every host's release state the same; users through the edge
    (HTTPS on h1) see no failed request, and after each switch only the colour switched to."""
    from shipyard.controller.releases import read_state
    from tests.drill_traffic import SteadyLoad, api_client

    before = read_state(settings)
    version, target, apps = f"mh-{time.strftime('%H%M%S')}", before.idle, settings.hosts_with_role("app")
    with SteadyLoad(api_client(settings)) as load:
        _answers_after(load, 0)
        released = _shipyard("release", "--env", "multi", "--version", version)
        switched = time.monotonic()
        _answers_after(load, switched)
    said = released.stdout[-4000:] + released.stderr[-3000:]
    assert released.returncode == 0, said
    assert load.failed() == [], (load.failed()[:10], said)
    assert {served for t, _, served in load.answers if t >= switched} == {f"{target}/{version}"}
    states = {host.name: HostView(settings, host).release_state()[0] for host in settings.hosts}
    assert {(s.live, s.live_version) for s in states.values()} == {(target, version)}, states
    for host in apps:
        assert _running(settings, host, f"api-{target}") and _running(settings, host, f"worker-{target}"), host.name
        assert not _running(settings, host, f"worker-{before.live}"), f"{host.name}: {before.live}'s workers run"
    assert version in _shipyard("releases", "--env", "multi").stdout

    with SteadyLoad(api_client(settings)) as load:
        _answers_after(load, 0)
        rolled = _shipyard("rollback", "--env", "multi")
        back = time.monotonic()
        _answers_after(load, back)
    assert rolled.returncode == 0, rolled.stdout[-4000:] + rolled.stderr[-3000:]
    assert load.failed() == [], load.failed()[:10]
    assert {served for t, _, served in load.answers if t >= back} == {f"{before.live}/{before.live_version}"}
    for host in apps:
        assert _running(settings, host, f"worker-{before.live}"), f"{host.name}: {before.live}'s workers stopped"


# How long after a host's engine stops users may still see it: nginx retries a refused connect on
# the other app host at once; only requests already on the stopping host's sockets can fail.
HEALTH_WINDOW_S = 5


def _sentinels_answer(settings, skip_host: str = "") -> dict[str, str]:
    """What each Sentinel (but those of ``skip_host``) names as the Redis master (host:port)."""
    from shipyard.components.redis import SENTINEL_CONF
    from shipyard.controller.drills import run_in

    answers = {}
    for inst in topology.build(settings).instances_of("redis", "redis-sentinel"):
        if inst.host.name != skip_host:
            _, out, _ = run_in(settings, inst.name, ["sh", f"{SENTINEL_CONF}/cli.sh", "sentinel",
                                                      "get-master-addr-by-name", settings.redis.master_name])
            answers[inst.name] = ":".join(out.split()[:2])
    return answers


def test_with_h2s_engine_stopped_under_load_h1_serves_redis_fails_over_and_every_accepted_task_ends(
        hosts, settings, cold):
    """The drill of a lost host that runs an API, workers and the Redis master: h2's engine
    stopped (its containers with it: an API, workers, the Redis master, one Sentinel, a
    PostgreSQL replica, and one member each of Consul, etcd and Vault) under load through the edge on h1. After the
    health-check window no request fails; the Sentinels of h1 and h3 promote h3's replica; every
    task accepted meanwhile runs (h1's workers); h2's engine back, its containers come back, the
    next deploy converges and h2's node replicates from the new master."""
    from shipyard.components.redis.failover import replicas_in_sync
    from shipyard.controller.releases import read_state
    from tests.drill_traffic import SteadyLoad, api_client, wait_all_processed
    from tests.waiting import wait_for

    h2, topo = settings.host("h2"), topology.build(settings)
    master_h2, replica_h3 = (str(topo.announced(topo.find(n))) for n in ("redis", "redis-replica-1"))
    assert set(_sentinels_answer(settings).values()) == {master_h2}, "the drill stops the Redis master's host"
    box, live = hosts[h2.address], read_state(settings).live
    client = api_client(settings)
    try:
        with SteadyLoad(client) as load:
            _answers_after(load, 0)
            stopped = time.monotonic()
            box.stop_engine()
            _answers_after(load, stopped + HEALTH_WINDOW_S, 200)
            wait_for("the Sentinels of h1 and h3 name h3's replica the master",
                     lambda: set(_sentinels_answer(settings, "h2").values()) == {replica_h3}, 90)
            failed_over = time.monotonic() - stopped
            _answers_after(load, time.monotonic(), 40)  # and tasks go on being accepted after it
            ended = time.monotonic()
    finally:
        box.start_engine()
    early = load.failed(stopped, stopped + HEALTH_WINDOW_S)
    print(f"\nh2's engine stopped under load: {len(early)} failed in the first {HEALTH_WINDOW_S} s, "
          f"{len([a for a in load.answers if a[0] >= stopped])} answers after the stop; Redis failed over "
          f"to {replica_h3} within {failed_over:.1f} s", flush=True)
    assert load.failed(stopped + HEALTH_WINDOW_S, ended) == []
    assert load.failed(0, stopped) == []
    counts = wait_all_processed(client, load.accepted, 180)
    assert counts["processed"] == counts["accepted"] > 0, counts
    done, took = deploy()
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    print(f"the deploy after h2's engine came back ({took:.1f}s):\n" + "\n".join(
        line for line in done.stdout.splitlines() if line.startswith(f"[{h2.address}]") and "tier" in line), flush=True)
    for service in (f"api-{live}", f"worker-{live}", "consul-2", "redis", "redis-sentinel-2"):
        assert _running(settings, h2, service), f"{service} does not run on h2 after the deploy"
    # h2's node came back as a replica of the new master (node.sh asked the Sentinels), and every
    # Sentinel, h2's among them, names that master.
    wait_for("h2's Redis node replicating from h3's", lambda: replicas_in_sync(settings) == (1, []), 120)
    assert set(_sentinels_answer(settings).values()) == {replica_h3}
    # h2's PostgreSQL replica streams from h3's leader again (its slot kept the WAL it missed).
    wait_for("h2's PostgreSQL replica streaming from h3",
             lambda: _h2s_wal_receiver(settings) == f"streaming|{settings.host('h3').address}|5432", 120)


def test_with_h2_unreachable_a_deploy_limited_to_h1_and_h3_repairs_them_and_leaves_h2_alone(hosts, settings, cold):
    """h2 answers no SSH (its sshd stopped; its containers run on): `make deploy LIMIT=h1,h3`
    deploys the two others — it repairs a worker stopped on h1 — without asking h2 anything,
    and its audit event is on h1 and h3 only, with the limit it was given."""
    from shipyard.controller import audit_log
    from shipyard.controller.releases import read_state

    h1, h2 = settings.host("h1"), settings.host("h2")
    worker = f"worker-{read_state(settings).live}"
    view = HostControl(settings, h1)
    view.stop(view.container_of(worker))
    hosts[h2.address].stop_sshd()
    try:
        done = _shipyard("up", "--env", "multi", "--limit", "h1,h3")
    finally:
        hosts[h2.address].start_sshd()
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert f"[{h2.address}]" not in done.stdout  # no operation ran there
    assert f"[{h1.address}] tier app: shipyard-multi-{worker}-1: exited" in done.stdout, done.stdout[-4000:]
    assert _running(settings, h1, worker)
    events, _ = audit_log.read(settings)
    last = events[-1]
    assert (last.command, last.result, last.options.get("limit")) == ("up", "ok", "h1,h3")
    raw = HostView(settings, h2).read_path(audit.audit_log_path(settings.deploy_root, settings.name)) or b""
    assert last.id.encode() not in raw  # not recorded where nothing was done


def test_h3s_postgresql_leader_cut_off_h2_takes_over_archives_and_is_backed_up_and_h3_rejoins(hosts, settings, cold):
    """Failover to another host: h3's node (the leader) cut off from its network under load
    through the edge — from etcd, from h2 and from the repository's server beside it. h2's node
    takes over, its WAL on the new timeline reaches the repository on h3 (`pgbackrest check` on
    it: a segment switched and archived), a backup started on the repository's side finds h2's
    node as the primary while h3's is still away, and every task accepted is processed.
    Reconnected, h3's node rejoins as a replica of h2's on that timeline."""
    from tests.drill_traffic import SteadyLoad, api_client, wait_all_processed
    from tests.waiting import wait_for

    h2, h3 = settings.host("h2"), settings.host("h3")
    wait_for("h3's node leading and h2's streaming before the drill",
             lambda: _role(h3)[0] == "primary" and _h2s_wal_receiver(settings).startswith("streaming|"), 120)
    timeline = _role(h3)[1]
    control = HostControl(settings, h3)
    node = control.container_of("postgres")
    network = f"{settings.compose_project}_default"
    endpoint = node.attrs["NetworkSettings"]["Networks"][network]
    client = api_client(settings, tenant="multi-pg-failover")
    with SteadyLoad(client) as load:
        _answers_after(load, 0, count=20)
        control.docker.networks.get(network).disconnect(node)
        cut = time.monotonic()
        try:
            wait_for("h2's node leading", lambda: _role(h2)[0] == "primary", settings.postgres.patroni.ttl_s + 40)
            took_over = time.monotonic() - cut
            wait_for("tasks accepted after the takeover", lambda: sum(
                1 for t, status, _ in load.answers if t > cut + took_over and status == 202) >= 10, 60)
            new_timeline = _role(h2)[1]
            assert new_timeline and new_timeline > timeline, (timeline, new_timeline)
            code, out, err = HostControl(settings, h2).run(
                HostView(settings, h2).container_of("postgres-replica-1"),
                ["env", "PGPASSFILE=/run/secrets/superuser_pgpass", "pgbackrest", "--stanza=shipyard-multi", "check"],
                user="postgres")
            assert code == 0 and f"WAL segment {new_timeline:08X}" in out + err, out[-2000:] + err[-2000:]
            started = time.monotonic()
            code, out, err = control.run(control.container_of("pgbackrest-repo"),
                                         ["python3", "/etc/postgresql/shipyard/pgbackrest-node.py", "backup"])
            backup_s = time.monotonic() - started
            assert code == 0 and "complete" in out, out[-2000:] + err[-2000:]
        finally:
            control.docker.networks.get(network).connect(node, ipv4_address=endpoint["IPAddress"],
                                                         aliases=endpoint.get("Aliases") or [])
    wait_for("h3's node back as a replica streaming from h2", lambda: _role(h3) == ("replica", new_timeline), 180)
    counts = wait_all_processed(client, load.accepted, timeout=180)
    print(f"\nmulti pg failover: h3's leader cut off -> h2's node leading after {took_over:.1f} s (timeline "
          f"{timeline} -> {new_timeline}); backup from the repository's side {backup_s:.1f} s; accepted "
          f"{counts['accepted']}, processed {counts['processed']}", flush=True)
    assert counts["processed"] == counts["accepted"], counts


def test_down_with_volumes_leaves_nothing_of_the_environment_on_any_host(hosts, settings, cold):
    done = subprocess.run([sys.executable, "-m", "shipyard", "down", "--env", "multi", "--volumes"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for host in settings.hosts:
        assert f"multi on {host.name}: removed {settings.deploy_root}/multi" in done.stdout
        box = hosts[host.address]
        left = box.ssh(f"docker ps -aq --filter label=com.docker.compose.project={settings.compose_project}; "
                       f"docker volume ls -q --filter label=com.docker.compose.project={settings.compose_project}; "
                       f"ls -d {settings.deploy_root}/multi 2>/dev/null; true").stdout.split()
        assert left == [], (host.name, left)
