"""Real PostgreSQL and Redis servers on free loopback ports, for tests and benchmarks.

PostgreSQL refuses to run as root, so when the run is root the cluster belongs to the
``postgres`` OS user (present wherever Debian's postgresql package is installed).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from taskplatform import auth
from taskplatform.settings import ProcessSettings

PG_BIN = Path(os.environ.get("TASKS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
SERVICES = Path(__file__).resolve().parents[1]
# The official Python client (`taskplatform smoke` calls the API through it); the image installs
# its wheel, the test processes import it from the checkout.
CLIENT = SERVICES.parent / "clients" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class Postgres:
    root: Path
    port: int = field(default_factory=free_port)
    user: str = "tasks"
    database: str = "tasks"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start(self) -> "Postgres":
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            for path in (self.root, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user,
                                     f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8"]),
                       check=True, capture_output=True)
        pwfile.unlink()
        self._pg_ctl_start()
        env = dict(os.environ, PGPASSWORD=self.password)
        subprocess.run([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                        "-d", "postgres", "-c", f'CREATE DATABASE "{self.database}"'],
                       check=True, capture_output=True, env=env)
        return self

    def _pg_ctl_start(self) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.root / "log"),
                                     "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
                                           f"-c fsync=off -c max_connections=200",
                                     "start"]), check=True, capture_output=True)
        wait_port(self.port)

    def stop(self) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True)

    def restart(self) -> None:
        """Start again on the same data and port (after ``stop``)."""
        self._pg_ctl_start()


@dataclass
class Redis:
    root: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    process: subprocess.Popen | None = None

    def start(self) -> "Redis":
        """Without persistence: a restart starts empty, the harshest case for the platform."""
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "redis.conf"
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\nrequirepass {self.password}\nsave \"\"\n"
                        f"appendonly no\ndir {self.root}\n")
        conf.chmod(0o600)
        self.process = subprocess.Popen([REDIS_SERVER, str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def token_for(key_file: Path, subject: str, ttl_seconds: float = 3600, scopes: tuple[str, ...] | None = None) -> str:
    """A token signed with the signing key of a key set file, for the API's default issuer and
    audience (tests, benchmarks and drills mint their tokens here); ``scopes`` None: no
    ``scope`` claim, every scope."""
    defaults = ProcessSettings.model_fields
    return auth.KeySet.parse(key_file.read_text()).issue(subject, defaults["jwt_issuer"].default,
                                                          defaults["jwt_audience"].default, ttl_seconds, scopes)


def write_secrets(directory: Path, pg: Postgres, redis: Redis, jwt_key: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in (("postgres_password", pg.password), ("redis_password", redis.password),
                        ("jwt_signing_key", jwt_key)):
        (directory / name).write_text(value + "\n")
        (directory / name).chmod(0o400)


# Schedules may fire every second here (the default minimum is a minute): the firing tests need
# occurrences to come within a test's time.
RUNTIME_DEFAULTS = {"version": "1", "rate_limit_per_minute": 100000, "worker_concurrency": 4,
                    "task_max_attempts": 3, "retry_base_seconds": 0.2, "retry_max_seconds": 1.0,
                    "reconcile_after_seconds": 2.0, "log_level": "INFO", "schedule_min_interval_seconds": 1}


def write_config(path: Path, **overrides) -> dict:
    import json

    doc = dict(RUNTIME_DEFAULTS, **overrides)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)  # like the deploy: a new file by rename
    return doc


@dataclass
class Platform:
    """A PostgreSQL, a Redis, secrets and config for the platform's processes."""

    root: Path
    pg: Postgres
    redis: Redis
    jwt_key: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def config_file(self) -> Path:
        return self.root / "runtime.json"

    def token(self, subject: str, ttl_seconds: float = 3600, scopes: tuple[str, ...] | None = None) -> str:
        """A bearer token for ``subject``, as the platform's token issuer would sign it."""
        return token_for(self.secrets_dir / auth.SECRET_NAME, subject, ttl_seconds, scopes)

    def env(self, **extra) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "TASKS_PG_HOST": "127.0.0.1", "TASKS_PG_PORT": str(self.pg.port), "TASKS_PG_DATABASE": self.pg.database,
            "TASKS_PG_USER": self.pg.user, "TASKS_REDIS_HOST": "127.0.0.1", "TASKS_REDIS_PORT": str(self.redis.port),
            "TASKS_SECRETS_DIR": str(self.secrets_dir), "TASKS_CONFIG_FILE": str(self.config_file),
            "TASKS_RELEASE_COLOUR": "green", "TASKS_BUILD_VERSION": "test-1", "TASKS_WORKER_METRICS_PORT": "0",
            "TASKS_LEASE_SECONDS": "3", "TASKS_CLAIM_IDLE_SECONDS": "2", "TASKS_MAINTENANCE_INTERVAL_SECONDS": "0.3",
            "TASKS_CONFIG_POLL_SECONDS": "0.2", "PYTHONPATH": os.pathsep.join((str(SERVICES), str(CLIENT))),
        })
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run(self, *args: str, **env) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "taskplatform", *args], env=self.env(**env),
                              capture_output=True, text=True, timeout=120)

    def spawn(self, *args: str, log_name: str | None = None, **env) -> subprocess.Popen:
        log_path = self.root / f"{log_name or args[0]}-{secrets.token_hex(4)}.log"  # unique: processes come and go
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "taskplatform", *args], env=self.env(**env),
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = log_path
        self.processes.append(proc)
        return proc

    def start_api(self, processes: int = 1, **env) -> str:
        return self.spawn_api(processes, **env).url

    def spawn_api(self, processes: int = 1, **env) -> subprocess.Popen:
        """An API process (``env``: TASKS_* overrides), once it listens; ``.url`` is its URL."""
        port = free_port()
        proc = self.spawn("api", TASKS_API_PORT=port, TASKS_API_HOST="127.0.0.1", TASKS_API_PROCESSES=processes, **env)
        wait_port(port, 30)
        proc.url = f"http://127.0.0.1:{port}"
        return proc

    def start_worker(self, heartbeat: str | None = None, **env) -> subprocess.Popen:
        """A worker process; ``.heartbeat`` is its heartbeat file (JSON: time, applied config)."""
        # A fresh name: a file left by a stopped worker would pass for this one being ready.
        heartbeat = heartbeat or str(self.root / f"worker-{secrets.token_hex(4)}.heartbeat")
        proc = self.spawn("worker", TASKS_HEARTBEAT_FILE=heartbeat, **env)
        proc.heartbeat = heartbeat
        return proc

    def stop_workers(self) -> None:
        self.stop_processes(only="worker")

    def stop_processes(self, only: str | None = None, chosen: list[subprocess.Popen] | None = None) -> None:
        """Stops (SIGTERM, then SIGKILL after 25 s) the ``chosen`` processes, else those running
        ``only`` (a command), else all."""
        if chosen is None:
            chosen = [p for p in self.processes if only is None or p.args[-1] == only]
        for proc in chosen:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in chosen:
            try:
                proc.wait(25)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            self.processes.remove(proc)

    def stop(self) -> None:
        self.stop_processes()
        self.redis.stop()
        self.pg.stop()


def start_platform(root: Path | None = None, **config) -> Platform:
    root = root or Path(tempfile.mkdtemp(prefix="taskplatform-"))
    os.chmod(root, 0o755)
    pg = Postgres(root / "pg").start()
    redis = Redis(root / "redis").start()
    platform = Platform(root, pg, redis, jwt_key=secrets.token_urlsafe(32))
    write_secrets(platform.secrets_dir, pg, redis, platform.jwt_key)
    write_config(platform.config_file, **config)
    migrated = platform.run("migrate")
    if migrated.returncode != 0:
        platform.stop()
        raise RuntimeError(f"migrate failed:\n{migrated.stdout}\n{migrated.stderr}")
    return platform



def make_roles(pg: Postgres, *, app_password: str, migrator_password: str, issuer_password: str | None = None,
               migrate: bool = False) -> None:
    """The platform's roles on ``pg``'s database as ``db-setup`` makes them
    (``taskplatform.dbsetup``): ``tasks_app`` and ``tasks_migrator`` with these passwords, and
    with ``issuer_password`` the issuer Vault's database engine connects as; ``migrate``: the
    schema first (``taskplatform.migrate``, as ``pg``'s own superuser)."""
    from taskplatform import dbsetup
    from taskplatform import migrate as migrations
    from taskplatform.secrets import SecretError, SecretSource

    class Given(SecretSource):
        def __init__(self, **values):
            self.values = {k: v for k, v in values.items() if v is not None}

        def get(self, name):
            if name not in self.values:
                raise SecretError(f"{name}: not given")
            return self.values[name]

    process = ProcessSettings(pg_host="127.0.0.1", pg_port=pg.port, pg_user=pg.user, pg_database=pg.database,
                              pg_admin_user=pg.user)
    if migrate:
        migrations.upgrade(process, Given(postgres_password=pg.password))
    dbsetup.setup(process, Given(postgres_admin_password=pg.password, migrator_password=migrator_password,
                                 app_password=app_password, issuer_password=issuer_password))
