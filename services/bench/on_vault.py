"""bench-api's secrets-backend phase (issue 20): create-task throughput with the API on the
secret files (the ``age`` backend) against the same API on Vault, in one run (goal: creations/s
vault/files >= 0.95).

Both sides are the API as each backend deploys it, on the bench's own PostgreSQL and Redis,
2 uvicorn processes each, with the roles ``db-setup`` makes (taskplatform_testing.servers.make_roles):

- **files**: ``TASKS_PG_USER=tasks_app`` with its static password in the secret file
  ``postgres_password``;
- **vault**: a real OpenBao server (``bao server`` from the component's template, TLS, raft;
  taskplatform_testing.bao_server) initialised, unsealed and bootstrapped by the component's own
  bootstrap (the deployed AppRoles: periodic tokens, single-use secret-ids); the API's supervisor
  unwraps the secret-id the deploy would hand it, logs in, and its credential keeper takes
  dynamic ``tasks_app`` users from the database engine, renews their leases and moves the pools
  to a new user when a lease nears its max TTL.

The lease is short on purpose (``lease_ttl``: the window's length, max twice that): the keeper
renews every half TTL and switches users every ~1.5 windows, so the vault windows carry the
switches (new connections, a ``CREATE ROLE`` by Vault, the old user dropped at its lease's end),
not only a steady state. A deployed lease (1 h, max 24 h) switches far less often: the ratio here
is the pessimistic one.

Both APIs run for the whole phase; the windows alternate files/vault (A/B pairs, the same wrk
connections and duration), so drift of the machine falls on both. The switches are the keeper's
generations (its state file) during the vault windows, and the dynamic users seen in
``pg_stat_activity`` (sampled every 0.5 s during every window) confirm the pools moved.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import psycopg
import requests

from shipyard.components.vault import access, bootstrap
from shipyard.inventory import load_environment
from taskplatform.db_credentials import read_credentials
from taskplatform_testing.bao_server import Vault, hand_off
from taskplatform_testing.servers import make_roles

REPO = Path(__file__).resolve().parents[2]
GOAL = 0.95
SAMPLE_EVERY_S = 0.5
APP_ROLE = "tasks_app"


def lease_ttl(window_s: int) -> tuple[int, int]:
    """(TTL, max TTL) of the dynamic users: a switch every ~1.5 windows (see the docstring)."""
    return window_s, 2 * window_s


def _wait(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"bench-api: {what}: not within {timeout_s:g} s")


def _ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/health/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


class UsersSeen:
    """The dynamic users (``v-%``) with a session, sampled from pg_stat_activity on a thread;
    ``window()`` starts a new set."""

    def __init__(self, pg):
        self._conn = psycopg.connect(host="127.0.0.1", port=pg.port, dbname=pg.database, user=pg.user,
                                     password=pg.password, autocommit=True, connect_timeout=5)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.current: set[str] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        self._conn.close()

    def window(self) -> set[str]:
        """What was seen since the last call; starts a new set."""
        with self._lock:
            seen, self.current = self.current, set()
        return seen

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            users = {row[0] for row in self._conn.execute(
                "SELECT DISTINCT usename FROM pg_stat_activity WHERE usename LIKE 'v-%'").fetchall()}
            with self._lock:
                self.current |= users


class PendingVault:
    """The Vault server started (and initialised, unsealed) on a thread: its init is mostly raft's
    election timeouts (6-10 s of waiting, ~0.2 s of CPU here), so the bench starts it while an
    earlier phase runs (the workers' drain) instead of adding that wait to the run."""

    def __init__(self, platform):
        self.settings = load_environment(REPO, "ci", {"SHIPYARD_VAULT__ENABLED": "true"})
        self.root = platform.root / "secrets-backends"
        self.root.mkdir()
        executor = ThreadPoolExecutor(1)
        self._future = executor.submit(Vault, self.root / "bao", self.settings)
        executor.shutdown(wait=False)
        self._stopped = False

    def get(self) -> Vault:
        return self._future.result(timeout=120)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            vault = self._future.result(timeout=120)
        except Exception:  # noqa: BLE001 - it did not start: nothing to stop (get() said why)
            return
        vault.stop()


def _bootstrap(pending: PendingVault, platform, ttl_s: int, max_ttl_s: int, issuer_password: str) -> Vault:
    """The server bootstrapped for this PostgreSQL by the component's bootstrap, its ``tasks_app``
    users leased ``ttl_s`` (max ``max_ttl_s``; below the settings' 10 s floor in the short mode,
    hence set here and not by a variable)."""
    vault = pending.get()
    wanted = access.desired(pending.settings, (f"127.0.0.1:{platform.pg.port}",))
    wanted = dataclasses.replace(wanted, database_roles=tuple(
        dataclasses.replace(role, ttl_s=ttl_s, max_ttl_s=max_ttl_s) for role in wanted.database_roles))
    bootstrap.bootstrap(vault.root(), wanted, issuer_password)
    return vault


def compare(platform, pending: PendingVault, run_load: Callable[[str], dict], warm_up: Callable[[str], dict],
            window_s: int, pairs: int) -> dict:
    """``pairs`` of windows (files, then vault) of ``run_load(url)`` (a wrk run of ``window_s``:
    requests, accepted, duration_s, errors, p95_ms) against the two APIs. ``pending``: the Vault
    server, stopped at the end."""
    phase_started = time.monotonic()
    ttl_s, max_ttl_s = lease_ttl(window_s)
    root = pending.root
    app_password, issuer_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    make_roles(platform.pg, app_password=app_password, migrator_password=secrets.token_urlsafe(24),
               issuer_password=issuer_password)
    # The secret files both sides get, as deployed: the app role's static password (which the
    # vault side is given too and does not use), Redis's password, the JWT key set.
    files = root / "secrets"
    shutil.copytree(platform.secrets_dir, files)
    (files / "postgres_password").chmod(0o600)
    (files / "postgres_password").write_text(app_password + "\n")
    started = time.monotonic()
    vault = _bootstrap(pending, platform, ttl_s, max_ttl_s, issuer_password)
    apis = []
    try:
        common = {"TASKS_PG_USER": APP_ROLE, "TASKS_SECRETS_DIR": str(files)}
        state = root / "vault-state"
        vault_env = {**common, **hand_off(vault, "api", files, state), "TASKS_VAULT_TOKEN_FILE": str(state / "token")}
        with ThreadPoolExecutor(2) as starting:  # side by side: each waits for its port
            apis = list(starting.map(lambda env: platform.spawn_api(2, **env), (common, vault_env)))
        for api in apis:
            _wait(f"the API ({api.log_path}) ready", lambda: _ready(api.url), 30)
        setup_s = time.monotonic() - started
        for api in apis:
            warm_up(api.url)
        runs = {"files": [], "vault": []}
        switches, users, load_before = 0, set(), os.getloadavg()
        with UsersSeen(platform.pg) as seen:
            for _ in range(pairs):
                seen.window()
                runs["files"].append(run_load(apis[0].url))
                seen.window()
                before = read_credentials(state).generation
                runs["vault"].append(run_load(apis[1].url))
                switches += read_credentials(state).generation - before
                users |= seen.window()
    finally:
        platform.stop_processes(chosen=[api for api in apis if api in platform.processes])
        pending.stop()
    phase_s = time.monotonic() - phase_started

    def side(runs: list[dict]) -> dict:
        seconds = sum(r["duration_s"] for r in runs)
        return {"creations_per_s": sum(r["accepted"] for r in runs) / seconds,
                "windows_per_s": [r["accepted"] / r["duration_s"] for r in runs],
                "p95_ms": max(r["p95_ms"] for r in runs),
                "failed": sum(r["errors"] + r["requests"] - r["accepted"] for r in runs)}  # not 202

    result = {"files": side(runs["files"]), "vault": side(runs["vault"]), "pairs": pairs, "window_s": window_s,
              "lease_ttl_s": ttl_s, "lease_max_ttl_s": max_ttl_s, "user_switches": switches,
              "dynamic_users_seen": len(users), "setup_s": setup_s, "phase_s": phase_s,
              "load_before": load_before, "load_after": os.getloadavg()}
    result["ratio"] = result["vault"]["creations_per_s"] / result["files"]["creations_per_s"]
    result["pair_ratios"] = [v / f for f, v in zip(result["files"]["windows_per_s"], result["vault"]["windows_per_s"])]
    return result


def met(result: dict) -> bool:
    return result["ratio"] >= GOAL and result["files"]["failed"] == result["vault"]["failed"] == 0


def print_comparison(result: dict) -> bool:
    """Prints the phase; True when its goal is met."""
    r = result
    print(f"  secrets backend (issue 20: {r['pairs']} pairs of {r['window_s']}s windows, files then vault; the same "
          f"API, 2 processes each, as tasks_app; bootstrap and both APIs ready in {r['setup_s']:.1f} s, the phase {r['phase_s']:.0f} s)")
    print(f"    lease of the vault side's users: TTL {r['lease_ttl_s']} s, max {r['lease_max_ttl_s']} s (renewed every "
          f"{r['lease_ttl_s'] / 2:g} s, a new user every ~{1.5 * r['lease_ttl_s']:g} s); user switches during the "
          f"vault windows {r['user_switches']} (the keeper's generations), dynamic users with sessions seen then "
          f"{r['dynamic_users_seen']}")
    for name in ("files", "vault"):
        s = r[name]
        print(f"    {name:5}  {s['creations_per_s']:8.0f} creations/s  (windows "
              f"{', '.join(f'{v:.0f}' for v in s['windows_per_s'])})  p95 {s['p95_ms']:6.1f} ms  failed {s['failed']}")
    goal = met(r)
    print(f"    ratio vault/files {r['ratio']:.3f} (pairs {', '.join(f'{v:.2f}' for v in r['pair_ratios'])}); "
          f"goal >= {GOAL}, none failed: {'PASS' if goal else 'MISSED'}"
          + ("" if r["user_switches"] else "; no user switch fell in a vault window")
          + f"; load average {r['load_before'][0]:.2f} before, {r['load_after'][0]:.2f} after")
    return goal
