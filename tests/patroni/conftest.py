"""Real processes on loopback, no Docker: one etcd server (Debian's etcd-server, auth on,
Patroni's user limited to its prefix by shipyard/components/postgres/etcd_access.py) and three
PostgreSQL 15 nodes, each run by Debian's Patroni from the component's own rendered
patroni.yml, its secret fragments and pg_hba.conf, in temporary directories on free ports;
each archives through Debian's pgBackRest, from its own rendered pgbackrest.conf, into one
repository directory all three share (the volume every node mounts in a deploy).
``make host-test-patroni`` installs the packages. Everything is stopped and deleted at the end."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from shipyard.components import postgres as component
from shipyard.components.postgres import etcd_access, patroni, pgbackrest
from shipyard.inventory import load_environment
from shipyard.render import render_secret_file
from shipyard.render.context import RenderContext
from shipyard.render.templates import render_template
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
# Three nodes (two replicas) under Patroni, synchronous mode on: the zero-loss case.
VARIABLES = {"SHIPYARD_POSTGRES__REPLICAS": "2",
             "SHIPYARD_POSTGRES__PATRONI__SYNCHRONOUS": "true"}
NODES = ("node-1", "node-2", "node-3")


def free_port() -> int:
    from taskplatform_testing.servers import free_port as free

    return free()


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if not path:
        pytest.fail(f"{binary}: not installed; run `make host-test-patroni` (Debian's patroni, etcd-server)")
    return path


@dataclass
class Etcd:
    root: Path
    client_port: int
    process: subprocess.Popen

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_etcd(root: Path) -> Etcd:
    root.mkdir(mode=0o700, parents=True)
    client, peer = free_port(), free_port()
    peer_url = f"http://127.0.0.1:{peer}"
    argv = [_need("etcd"), "--name", "etcd-1", "--data-dir", str(root / "data"),
            "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"etcd-1={peer_url}", "--initial-cluster-state", "new"]
    with open(root / "etcd.log", "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    etcd = Etcd(root, client, process)

    def healthy():
        try:
            return requests.get(f"{etcd.endpoint}/health", timeout=2).json().get("health") == "true"
        except requests.RequestException:
            return False

    try:
        wait_for("etcd healthy", healthy, 30)
    except AssertionError:
        etcd.stop()
        raise AssertionError("etcd did not start:\n" + (root / "etcd.log").read_text()[-3000:])
    return etcd


@dataclass
class Node:
    """One Patroni-run PostgreSQL: ``root`` holds conf/ (rendered patroni.yml, pg_hba.conf),
    secrets/ (the fragments, 0400), patroni/ (Patroni's config directory: links to both), data/, run/."""

    name: str
    root: Path
    pg_port: int
    api_port: int
    stanza: str = ""
    process: subprocess.Popen | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def get(self, path: str) -> tuple[int, dict]:
        """The REST API's status and JSON (0, {} when nothing answers)."""
        try:
            reply = requests.get(f"{self.api}{path}", timeout=2)
        except requests.RequestException:
            return 0, {}
        try:
            return reply.status_code, reply.json()
        except ValueError:
            return reply.status_code, {}

    def start(self) -> None:
        log_path = self.root / f"patroni-{len(self.logs) + 1}.log"
        self.logs.append(log_path)
        user = pwd.getpwnam("postgres")
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [_need("patroni"), str(self.root / "patroni")], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                env=self.environment())

    def environment(self) -> dict[str, str]:
        """What a deploy puts in the node's container environment (no secret: the passfile's path),
        with this node's paths: Patroni's, PostgreSQL's (archive_command) and pgbackrest-node.py's."""
        return {"PATH": os.environ["PATH"], "HOME": str(self.root), "LANG": "C.UTF-8",
                "PGBACKREST_CONFIG": str(self.root / "conf" / pgbackrest.CONFIG_NAME), "PGBACKREST_STANZA": self.stanza,
                "PG_SUPERUSER_PASSFILE": str(self.root / "secrets" / component.SUPERUSER_PGPASS.target),
                "PATRONI_NAME": self.name, "PATRONI_API": self.api,
                "PGHOST": str(self.root / "run"), "PGPORT": str(self.pg_port)}

    def postmaster_pid(self) -> int | None:
        pid_file = self.root / "data" / "postmaster.pid"
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """SIGKILL to Patroni and to PostgreSQL with every backend (each in its own session, as
        Patroni starts it): what a killed container or a dead machine leaves."""
        postmaster = self.postmaster_pid()
        groups = {os.getpgid(self.process.pid)}
        if postmaster:
            try:
                groups.add(os.getpgid(postmaster))
            except ProcessLookupError:
                pass
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # Patroni stops PostgreSQL (fast shutdown) before it exits
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        postmaster = self.postmaster_pid()
        if postmaster:  # one a kill orphaned
            try:
                os.killpg(os.getpgid(postmaster), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())


def _owned_by_postgres(path: Path, mode: int) -> None:
    user = pwd.getpwnam("postgres")
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(mode)


def write_node(node: Node, settings, secret_values: dict[str, str], etcd_hosts: list[str], repo: Path) -> None:
    """The node's files as a deploy renders them: the component's templates, rendered here with
    loopback addresses and this node's directories."""
    host = settings.hosts_with_role("data")[0]
    ctx = RenderContext(settings, host, component.COMPONENT)
    variables = component.template_context(ctx)
    dirs = {name: node.root / name for name in ("conf", "secrets", "patroni", "run")}
    for path in (node.root, *dirs.values()):
        path.mkdir(parents=True, exist_ok=True)
        _owned_by_postgres(path, 0o700)
    paths = patroni.NodePaths(data_dir=str(node.root / "data"), conf_dir=str(dirs["conf"]), run_dir=str(dirs["run"]))
    addresses = patroni.NodeAddresses(pg_listen=f"127.0.0.1:{node.pg_port}", pg_connect=f"127.0.0.1:{node.pg_port}",
                                      api_listen=f"127.0.0.1:{node.api_port}", api_connect=f"127.0.0.1:{node.api_port}")
    templates = component.COMPONENT.templates_dir
    config = patroni.config_vars(settings.name, settings.postgres, node.name, addresses, paths, etcd_hosts)
    backrest = pgbackrest.config_vars(settings.name, settings.postgres, data_dir=paths.data_dir,
                                      socket_dir=paths.run_dir, port=node.pg_port, repo_path=str(repo),
                                      lock_path=str(dirs["run"] / "pgbackrest"))
    node.stanza = backrest["pgbackrest"]["stanza"]
    rendered = {dirs["conf"] / "patroni.yml": render_template("postgres", templates, patroni.TEMPLATE, config),
                dirs["conf"] / pgbackrest.CONFIG_NAME: render_template("postgres", templates, pgbackrest.TEMPLATE, backrest),
                dirs["conf"] / "pg_hba.conf": render_template("postgres", templates, "postgres/pg_hba.conf.j2", variables)}
    for path, text in rendered.items():
        path.write_text(text)
        _owned_by_postgres(path, 0o444)
    for secret in (*patroni.SECRETS, component.SUPERUSER_PGPASS):
        path = dirs["secrets"] / secret.target
        path.write_bytes(render_secret_file(component.COMPONENT, secret.template, secret.secret,
                                            secret_values[secret.secret], variables))
        _owned_by_postgres(path, 0o400)
    # Patroni's config path: one directory, the rendered file and the secrets side by side.
    for source in (dirs["conf"] / "patroni.yml", *(dirs["secrets"] / s.target for s in patroni.SECRETS)):
        (dirs["patroni"] / source.name).symlink_to(source)


@pytest.fixture(scope="session")
def settings():
    return load_environment(REPO, "ci", VARIABLES)


@pytest.fixture(scope="session")
def workdir():
    root = Path(tempfile.mkdtemp(prefix="shipyard-patroni-"))
    os.chmod(root, 0o755)  # the nodes run as the postgres user
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def secret_values() -> dict[str, str]:
    return {name: secrets.token_urlsafe(24) for name in (*patroni.secret_names(), "etcd_root_password")}


@pytest.fixture(scope="session")
def etcd(workdir, settings, secret_values):
    _need("patroni")
    server = start_etcd(workdir / "etcd")
    etcd_access.grant_patroni(server.endpoint, settings.name, secret_values["etcd_root_password"],
                              secret_values["patroni_etcd_password"])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster(workdir, settings, secret_values, etcd):
    nodes = [Node(name, workdir / name, free_port(), free_port()) for name in NODES]
    repo = workdir / "pgbackrest-repo"
    repo.mkdir()
    _owned_by_postgres(repo, 0o750)
    for node in nodes:
        write_node(node, settings, secret_values, [f"127.0.0.1:{etcd.client_port}"], repo)
    for node in nodes:
        node.start()
    yield nodes
    for node in nodes:
        node.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the tail of every node's Patroni log and of etcd's: the
    why of a cluster that did not converge is there, and the directories are deleted at the end."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    nodes = item.funcargs.get("cluster") or []
    for node in nodes:
        lines = node.log_text().splitlines()[-40:]
        report.sections.append((f"Patroni log of {node.name} (last 40 lines)", "\n".join(lines)))
    etcd = item.funcargs.get("etcd")
    if etcd is not None and (etcd.root / "etcd.log").exists():
        lines = (etcd.root / "etcd.log").read_text(errors="replace").splitlines()[-20:]
        report.sections.append(("etcd log (last 20 lines)", "\n".join(lines)))


class LoopbackTransport:
    """patroni_api.Transport for the real processes here: each node's REST API on its loopback
    port (a change authenticated with the credentials read from the node's own 0400 fragment,
    as the deploy's transport reads them inside the container), SQL as the superuser."""

    def __init__(self, nodes: list[Node], settings, secret_values: dict[str, str]):
        self.nodes = {n.name: n for n in nodes}
        self.settings, self.secret_values = settings, secret_values

    def api(self, node: str, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
        auth = None
        if method != "GET":
            import yaml

            fragment = yaml.safe_load((self.nodes[node].root / "secrets" / "patroni-restapi.yml").read_text())
            auth = (fragment["restapi"]["authentication"]["username"], fragment["restapi"]["authentication"]["password"])
        try:
            reply = requests.request(method, f"{self.nodes[node].api}{path}", json=body, auth=auth, timeout=90)
        except requests.RequestException as exc:
            return 0, str(exc)
        return reply.status_code, reply.text

    def sql(self, node: str, query: str) -> list[list[str]] | None:
        import psycopg

        try:
            with psycopg.connect(host="127.0.0.1", port=self.nodes[node].pg_port, user=self.settings.postgres.user,
                                 dbname="postgres", password=self.secret_values["postgres_password"],
                                 autocommit=True, connect_timeout=3) as conn:
                rows = conn.execute(query).fetchall()
        except psycopg.Error:
            return None
        return [[_text(v) for v in row] for row in rows]


def _text(value) -> str:
    # As psql -tA prints them: booleans t/f, NULL empty.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def patroni_cluster(nodes: list[Node], settings, secret_values):
    from shipyard.components.postgres.patroni_api import Cluster

    return Cluster(settings.name, tuple(n.name for n in nodes), LoopbackTransport(nodes, settings, secret_values),
                   settings.postgres.patroni.maximum_lag_on_failover_mb * 1024 * 1024)


def desired_config(settings) -> dict:
    """``bootstrap.dcs`` of patroni.yml rendered as write_node renders it for these settings: what
    the deploy's reconcile brings the running cluster to."""
    from shipyard.components.postgres import patroni_decide

    paths = patroni.NodePaths(data_dir="/unused", conf_dir="/unused", run_dir="/unused")
    addresses = patroni.NodeAddresses("127.0.0.1:1", None, "127.0.0.1:2", None)
    config = patroni.config_vars(settings.name, settings.postgres, "node-1", addresses, paths, [])
    return patroni_decide.desired_config(
        render_template("postgres", component.COMPONENT.templates_dir, patroni.TEMPLATE, config))
