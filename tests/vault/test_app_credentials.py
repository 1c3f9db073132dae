"""The task platform's own processes on Vault (taskplatform.vault_client, taskplatform.db_credentials):
the real API (two uvicorn processes) and a real worker log in with a wrapped single-use
secret-id, connect as dynamic ``tasks_app`` users and move to new ones under continuous
traffic with no failed request; Vault stopped mid-run: they keep serving until the lease ends,
count the failures, and readiness flips only then; a revoked token: a new login.

Its own OpenBao server (the session's ``bao`` is test_bootstrap's, which initialises it),
beside the session's PostgreSQL, bootstrapped by the component's bootstrap. Leases of 10 s
(max 20 s, conftest); the AppRoles here get tokens of 8 s (max 30 s) and multi-use secret-ids,
so that a new login happens within a test (the bootstrap's settings refuse TTLs under 60 s)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
import uuid
from pathlib import Path

import hvac.exceptions
import psycopg
import pytest
import requests

from shipyard.components.vault import bootstrap
from taskplatform_testing.bao_server import Vault, hand_off
from tests.vault.conftest import ISSUER_PASSWORD

TOKEN_TTL_S, TOKEN_MAX_TTL_S = 8, 30


@pytest.fixture(scope="module")
def vault(workdir, settings, wanted, postgres):
    server = Vault(workdir / "app-bao", settings)
    root = server.root()
    bootstrap.bootstrap(root, wanted, ISSUER_PASSWORD)
    # Short tokens that are not periodic (the deployed AppRoles' are: tests/vault/test_bootstrap.py),
    # and secret-ids that log in again: the keeper's in-process re-login at a token's max TTL.
    for service in ("api", "worker"):
        root.write_data(f"auth/approle/role/{service}", data={
            "token_ttl": TOKEN_TTL_S, "token_max_ttl": TOKEN_MAX_TTL_S, "token_period": 0, "secret_id_num_uses": 0})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def platform(workdir, postgres, vault, wanted):
    from taskplatform_testing.servers import Platform, Redis, write_config, write_secrets

    root = workdir / "platform"
    root.mkdir()
    redis = Redis(root / "redis").start()
    platform = Platform(root, postgres, redis, jwt_key=secrets.token_urlsafe(32))
    write_secrets(platform.secrets_dir, postgres, redis, platform.jwt_key)
    # Not the password of any user the services may use: under Vault they must not read it.
    (platform.secrets_dir / "postgres_password").chmod(0o600)
    (platform.secrets_dir / "postgres_password").write_text("not-used-under-vault\n")
    write_config(platform.config_file, worker_concurrency=8)
    bootstrap.sync_secrets(vault.root(), wanted, {"redis_password": redis.password})
    yield platform
    platform.stop_processes()
    redis.stop()


def _vault_env(vault: Vault, platform, service: str) -> dict:
    """What the deploy gives a service's container: Vault's address and CA, the role-id, and a
    fresh wrapped secret-id in a secret file; and a state dir of its own (a tmpfs, deployed)."""
    state = platform.root / f"vault-{service}-{uuid.uuid4().hex[:8]}"
    return {**hand_off(vault, service, platform.secrets_dir, state),
            "TASKS_VAULT_KV_PATH": f"services/{service}", "TASKS_PG_USER": "nobody"}


def _credentials(env: dict) -> dict:
    return json.loads((Path(env["TASKS_VAULT_STATE_DIR"]) / "postgres.json").read_text())


def _lease_status(env: dict) -> dict:
    """The keeper's lease.json (what `make status` shows), checked to hold nothing secret."""
    path = Path(env["TASKS_VAULT_STATE_DIR"]) / "lease.json"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    text = path.read_text()
    assert "password" not in text and _credentials(env)["password"] not in text
    for kept in Path(env["TASKS_VAULT_STATE_DIR"]).rglob("*"):  # no token either
        if kept.name == "token":
            assert kept.read_text().strip() not in text
    return json.loads(text)


def _admin(postgres):
    return psycopg.connect(host="127.0.0.1", port=postgres.port, dbname=postgres.database, user=postgres.user,
                           password=postgres.password, autocommit=True, connect_timeout=5)


def _connected_users(admin) -> set[str]:
    return {row[0] for row in admin.execute("SELECT DISTINCT usename FROM pg_stat_activity "
                                            "WHERE usename LIKE 'v-%'").fetchall()}


def _roles_exist(admin, names) -> set[str]:
    return {row[0] for row in admin.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                            (list(names),)).fetchall()}


def _wait(what: str, check, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:g} s")


def _ready(url: str) -> int:
    try:
        return requests.get(f"{url}/health/ready", timeout=5).status_code
    except requests.RequestException:
        return 0


class Traffic:
    """Requests to the API from a thread, as fast as they are answered: creates and lists."""

    def __init__(self, url: str, token: str):
        self.url, self.headers = url, {"Authorization": f"Bearer {token}"}
        self.ok, self.failed, self.created = 0, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        session = requests.Session()
        session.headers.update(self.headers)
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                if n % 2:
                    reply = session.post(f"{self.url}/v1/tasks", json={"kind": "checksum", "payload": {"n": n}},
                                         timeout=10)
                    if reply.status_code == 201:
                        self.created.append(reply.json()["id"])
                else:
                    reply = session.get(f"{self.url}/v1/tasks?limit=5", timeout=10)
                outcome = reply.status_code < 300
                detail = f"{reply.status_code} {reply.text[:200]}"
            except requests.RequestException as exc:
                outcome, detail = False, repr(exc)
            if outcome:
                self.ok += 1
            else:
                self.failed.append((time.time(), detail))


def _log(proc) -> str:
    return Path(proc.log_path).read_text()


def test_api_and_worker_move_to_new_users_with_no_failed_request(vault, platform, postgres):
    api_env, worker_env = _vault_env(vault, platform, "api"), _vault_env(vault, platform, "worker")
    api = platform.spawn_api(2, **api_env)
    worker = platform.start_worker(**worker_env)
    _wait("the API ready", lambda: _ready(api.url) == 200, 30)
    _wait("the worker's credentials", lambda: (Path(worker_env["TASKS_VAULT_STATE_DIR"]) / "postgres.json").exists()
          or worker.poll() is not None, 30)
    assert worker.poll() is None, _log(worker)[-3000:]
    # The wrapped secret-id is single use: its file is gone once unwrapped.
    assert not (platform.secrets_dir / api_env["TASKS_VAULT_WRAPPED_SECRET_ID"]).exists()
    # The KV copy of the service's secret is kept beside the credentials (0600).
    kept = Path(api_env["TASKS_VAULT_STATE_DIR"]) / "secrets" / "redis_password"
    assert kept.read_text() == platform.redis.password and kept.stat().st_mode & 0o077 == 0
    api_users, worker_users, seen_connected, lease_statuses = [], [], set(), []
    with _admin(postgres) as admin, Traffic(api.url, platform.token("vault-tenant")) as traffic:
        end = time.monotonic() + 2 * 20 + 8  # more than two max TTLs of a lease (20 s)
        while time.monotonic() < end:
            for env, users in ((api_env, api_users), (worker_env, worker_users)):
                user = _credentials(env)["username"]
                if not users or users[-1] != user:
                    users.append(user)
            status = _lease_status(api_env)
            lease_statuses.append(status)
            assert status["failing"] == 0 and status["token_expires_at"] > status["updated_at"] - 1, status
            seen_connected |= _connected_users(admin)
            time.sleep(0.2)
    assert traffic.ok > 200, traffic.ok
    assert traffic.failed == [], traffic.failed[:5]
    # Each process moved at least twice, and its connections did (pg_stat_activity).
    assert len(api_users) >= 3 and len(worker_users) >= 3, (api_users, worker_users)
    assert set(api_users[:-1]) <= seen_connected and set(worker_users[:-1]) <= seen_connected
    # The token reached its max TTL (30 s) within the run: a new login, without a failure.
    assert "token near its max TTL: logging in again" in _log(api)
    # lease.json followed every move: each user the API held, generations rising, the lease's end
    # renewed (more ends than users), always in the future when written.
    assert {s["username"] for s in lease_statuses} >= set(api_users[1:])
    assert [s["generation"] for s in lease_statuses] == sorted(s["generation"] for s in lease_statuses)
    assert len({s["lease_expires_at"] for s in lease_statuses}) > len(set(api_users))
    assert all(s["lease_expires_at"] > s["updated_at"] for s in lease_statuses)
    assert all(s["lease_ttl_s"] == 10 for s in lease_statuses)
    assert _lease_status(worker_env)["username"] == _credentials(worker_env)["username"]
    assert _log(api).count("logged in to Vault") >= 2
    # Every user left behind is dropped (revoked with its token, or at its lease's end).
    with _admin(postgres) as admin:
        old = set(api_users[:-1] + worker_users[:-1])
        _wait("the old dynamic users dropped", lambda: not _roles_exist(admin, old), 30, 0.5)
        # The worker ran what the API took in, on its dynamic users.
        ids = [uuid.UUID(i) for i in traffic.created]
        _wait("every created task succeeded", lambda: admin.execute(
            "SELECT count(*) FROM tasks WHERE id = ANY(%s) AND status = 'succeeded'", (ids,)).fetchone()[0] == len(ids),
            60, 0.5)
    for value in (platform.redis.password, _credentials(api_env)["password"]):
        assert value not in _log(api) and value not in _log(worker)
    platform.stop_processes(chosen=[api, worker])


def test_a_second_start_on_the_same_wrapped_secret_id_fails_and_says_why(vault, platform):
    env = _vault_env(vault, platform, "worker")
    wrapped = (platform.secrets_dir / env["TASKS_VAULT_WRAPPED_SECRET_ID"]).read_text()
    first = platform.start_worker(**env)
    _wait("the worker's credentials", lambda: (Path(env["TASKS_VAULT_STATE_DIR"]) / "postgres.json").exists(), 30)
    platform.stop_processes(chosen=[first])
    (platform.secrets_dir / env["TASKS_VAULT_WRAPPED_SECRET_ID"]).write_text(wrapped)  # as a read-only mount keeps it
    second = platform.run("worker", **env)
    assert second.returncode == 1
    assert "expired (its wrap TTL) or was unwrapped already" in second.stdout, second.stdout[-2000:]
    assert wrapped.strip() not in second.stdout + second.stderr


def test_new_copies_are_read_at_once_when_the_deploy_touches_the_refresh_file(vault, platform):
    """A rotation's copies reach a running process without waiting for its poll (300 s by
    default): the deploy touches the refresh file, the keeper reads its KV path within a tick,
    keeps the new copy and reports its version (held.json: versions, no value)."""
    env = _vault_env(vault, platform, "worker")
    state = Path(env["TASKS_VAULT_STATE_DIR"])
    env |= {"TASKS_VAULT_REFRESH_FILE": str(state.parent / f"{state.name}-refresh"),
            "TASKS_VAULT_REPORT_FILE": str(state.parent / f"{state.name}-held.json")}
    kv = vault.root().secrets.kv.v2
    kv.create_or_update_secret(path="services/worker/rotated_note", secret={"value": "first"}, mount_point="secret")
    worker = platform.start_worker(**env)
    try:
        kept, held = state / "secrets" / "rotated_note", Path(env["TASKS_VAULT_REPORT_FILE"])
        _wait("the first copy", lambda: kept.exists() or worker.poll() is not None, 30)
        assert kept.read_text() == "first", _log(worker)[-2000:]
        for value in ("second", "third"):
            version = kv.create_or_update_secret(path="services/worker/rotated_note", secret={"value": value},
                                                 mount_point="secret")["data"]["version"]
            Path(env["TASKS_VAULT_REFRESH_FILE"]).touch()
            _wait(f"the copy {value!r}", lambda: kept.read_text() == value, 5)
            _wait("its version reported", lambda: json.loads(held.read_text())["kv"].get("rotated_note") == version, 5)
        assert "first" not in held.read_text() and "third" not in held.read_text()
        assert "secrets from Vault changed" in _log(worker)
    finally:
        worker.terminate()
        worker.wait(30)
        vault.root().secrets.kv.v2.delete_metadata_and_all_versions(path="services/worker/rotated_note",
                                                                    mount_point="secret")


def test_a_restarted_container_resumes_its_kept_token_and_a_fresh_hand_off_replaces_it(vault, platform):
    """As deployed: the wrapped secret-id and the token both in the container's hand-off
    directory (read-write). A restart by the engine (a crash, a reboot) finds no wrapped
    secret-id and resumes the kept token; a deploy's fresh one makes a new login, the kept
    token revoked; a kept token revoked with nothing handed over: exit 1, saying what to do."""
    env = _vault_env(vault, platform, "worker")
    env["TASKS_VAULT_TOKEN_FILE"] = str(Path(env["TASKS_VAULT_STATE_DIR"]) / "kept" / "token")
    Path(env["TASKS_VAULT_TOKEN_FILE"]).parent.mkdir(parents=True, mode=0o700)
    credentials = Path(env["TASKS_VAULT_STATE_DIR"]) / "postgres.json"

    def started(proc, log_line: str) -> None:
        _wait("the worker's credentials", lambda: credentials.exists(), 30)
        _wait(f"'{log_line}' in the worker's log", lambda: log_line in proc.log_path.read_text(), 30)

    first = platform.start_worker(**env)
    started(first, "logged in to Vault")
    token = Path(env["TASKS_VAULT_TOKEN_FILE"]).read_text().strip()
    assert oct(Path(env["TASKS_VAULT_TOKEN_FILE"]).stat().st_mode & 0o777) == "0o600"
    platform.stop_processes(chosen=[first])
    credentials.unlink()
    assert not (platform.secrets_dir / env["TASKS_VAULT_WRAPPED_SECRET_ID"]).exists()  # used, deleted

    resumed = platform.start_worker(**env)
    started(resumed, "resumed the token kept by an earlier start")
    assert vault.root().auth.token.lookup(token)["data"]["ttl"] > 0
    platform.stop_processes(chosen=[resumed])
    credentials.unlink()

    fresh = _vault_env(vault, platform, "worker")  # what the next deploy hands over
    (platform.secrets_dir / fresh["TASKS_VAULT_WRAPPED_SECRET_ID"]).rename(
        platform.secrets_dir / env["TASKS_VAULT_WRAPPED_SECRET_ID"])
    renewed = platform.start_worker(**env)
    started(renewed, "logged in to Vault")
    assert Path(env["TASKS_VAULT_TOKEN_FILE"]).read_text().strip() != token
    with pytest.raises(hvac.exceptions.Forbidden):
        vault.root().auth.token.lookup(token)  # the earlier incarnation's, revoked
    platform.stop_processes(chosen=[renewed])

    vault.root().auth.token.revoke(Path(env["TASKS_VAULT_TOKEN_FILE"]).read_text().strip())
    refused = platform.run("worker", **env)
    assert refused.returncode == 1
    assert "the token kept by an earlier start is refused" in refused.stdout, refused.stdout[-2000:]
    assert "`make up` hands a fresh one" in refused.stdout


def _revoke_tokens_of(vault: Vault, service: str) -> int:
    root, revoked = vault.root(), 0
    for accessor in root.list("auth/token/accessors")["data"]["keys"]:
        try:
            info = root.auth.token.lookup_accessor(accessor)["data"]
        except Exception:  # noqa: BLE001 - expired meanwhile
            continue
        if f"service-{service}" in info.get("policies", []):
            root.auth.token.revoke_accessor(accessor)
            revoked += 1
    return revoked


def test_a_refused_token_renewal_leads_to_a_new_login(vault, platform, postgres):
    env = _vault_env(vault, platform, "api")
    api = platform.spawn_api(1, **env)
    _wait("the API ready", lambda: _ready(api.url) == 200, 30)
    before = _credentials(env)["username"]
    assert _revoke_tokens_of(vault, "api") >= 1  # its leases (the user's sessions) go with it
    _wait("a new login after the refused renewal",
          lambda: "token renewal refused: logging in again" in _log(api), 20)
    _wait("new credentials", lambda: _credentials(env)["username"] != before, 20)
    headers = {"Authorization": f"Bearer {platform.token('vault-tenant')}"}
    _wait("requests served again", lambda: requests.get(f"{api.url}/v1/tasks", headers=headers,
                                                        timeout=5).status_code == 200, 20)
    assert _ready(api.url) == 200
    platform.stop_processes(chosen=[api])


def _metric(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{")
               or line.startswith(name + " "))


def test_vault_stopped_the_api_serves_until_its_lease_ends_then_is_not_ready(vault, platform, postgres):
    env = _vault_env(vault, platform, "api")
    api = platform.spawn_api(2, **env)
    _wait("the API ready", lambda: _ready(api.url) == 200, 30)
    assert _metric(api.url, "vault_errors_total") == 0
    with Traffic(api.url, platform.token("vault-tenant")) as traffic:
        _wait("traffic served", lambda: traffic.ok > 20, 20)
        vault.stop()
        stopped_at = time.time()
        # Until the held lease ends: ready, and every request served.
        flipped_at = None
        while time.time() < stopped_at + 40:
            held = _credentials(env)["expires_at"]
            status = _ready(api.url)
            if status != 200:
                flipped_at = time.time()
                break
            time.sleep(0.1)
        lease_end = _credentials(env)["expires_at"]
        served_until_then = [f for f in traffic.failed if f[0] < lease_end]
    assert flipped_at is not None, "readiness never changed while Vault was away"
    assert flipped_at >= lease_end >= held and lease_end > stopped_at, (flipped_at, lease_end, stopped_at)
    assert served_until_then == [], served_until_then[:5]
    assert traffic.ok > 50
    assert _metric(api.url, "vault_errors_total") >= 2  # counted across the API's processes
    assert requests.get(f"{api.url}/health/ready", timeout=5).json()["code"] == "not_ready"
    # lease.json says the keeper is failing, why (no secret), and that the lease has ended.
    failing = _lease_status(env)
    assert failing["failing"] >= 2 and failing["errors_total"] >= failing["failing"], failing
    assert failing["last_error"]["operation"] in ("renew_lease", "renew_token", "credentials", "login", "kv")
    assert "Error" in failing["last_error"]["reason"] or "Timeout" in failing["last_error"]["reason"], failing
    assert failing["lease_expires_at"] < time.time()
    # Vault back: the ended lease is refused, the token expired meanwhile; new login, new user, ready.
    vault.restart()
    _wait("ready again once Vault is back", lambda: _ready(api.url) == 200, 40, 0.5)
    assert _credentials(env)["expires_at"] > time.time()
    back = _wait("lease.json no longer failing", lambda: (s := _lease_status(env))["failing"] == 0 and s, 10)
    assert back["lease_expires_at"] > time.time() and back["errors_total"] >= failing["errors_total"]
    assert back["username"] == _credentials(env)["username"] and back["generation"] > failing["generation"]
    platform.stop_processes(chosen=[api])
    shutil.rmtree(env["TASKS_VAULT_STATE_DIR"], ignore_errors=True)
