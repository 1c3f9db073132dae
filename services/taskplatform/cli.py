"""`taskplatform api | worker | migrate | migrations | healthcheck api|worker | smoke | token | queue-stats` —
the container commands."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import tempfile
import time
from typing import TYPE_CHECKING

from taskplatform import logs, probe

if TYPE_CHECKING:
    from taskplatform.settings import ProcessSettings


def _api(settings: ProcessSettings) -> int:
    import uvicorn

    from taskplatform.coalesced_http import CoalescedHttpTools

    # Several uvicorn processes: metrics are aggregated through files in a fresh directory.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="taskplatform-metrics-")
    # With Vault, this process (uvicorn's supervisor) logs in once and keeps the credentials
    # that its uvicorn processes read (``db_credentials``): a wrapped secret-id logs in once.
    keeper = _start_keeper(settings)
    if keeper is False:
        return 1
    try:
        uvicorn.run("taskplatform.cli:app_factory", factory=True, host=settings.api_host, port=settings.api_port,
                    workers=settings.api_processes, log_config=None, access_log=False, proxy_headers=True,
                    forwarded_allow_ips="*", timeout_graceful_shutdown=15, loop="uvloop", http=CoalescedHttpTools)
    finally:
        if keeper:
            keeper.stop()
    return 0


def _start_keeper(settings: ProcessSettings):
    """The container's Vault credential keeper, started (None without Vault; False when it cannot
    start: the reason is logged, without any secret value)."""
    if not settings.vault_enabled():
        return None
    import hvac.exceptions

    from taskplatform.db_credentials import CredentialKeeper
    from taskplatform.vault_client import UNAVAILABLE, VaultStartError, reason

    logs.setup()
    keeper = CredentialKeeper(settings)
    try:
        keeper.start()
    except VaultStartError as exc:
        logging.getLogger("taskplatform.vault").error("cannot log in to Vault", extra={"reason": str(exc)})
        return False
    except (*UNAVAILABLE, hvac.exceptions.VaultError, RuntimeError) as exc:
        logging.getLogger("taskplatform.vault").error("cannot start with Vault", extra={
            "reason": reason(exc), "vault": settings.vault_addr})
        return False
    return keeper


def app_factory():
    from taskplatform.api import create_app

    logs.setup()
    app = create_app()
    # What the imports and the app built (~80k objects: routes, pydantic validators, the OpenAPI
    # models) lives as long as the process: out of the cyclic GC's sight. Else each full
    # collection walks them all, 30-75 ms with the event loop stopped, every 2-3 s under load:
    # that was the tail of the refusals' and the accepted requests' latency under overload.
    gc.freeze()
    return app


def _worker(settings: ProcessSettings) -> int:
    from taskplatform.config_source import build_config_source
    from taskplatform.secrets import for_process
    from taskplatform.worker import Worker, serve_metrics

    logs.setup()
    keeper = _start_keeper(settings)
    if keeper is False:
        return 1
    config = build_config_source(settings)
    config.load_initial()
    serve_metrics(settings.worker_metrics_port)
    worker = Worker(settings, for_process(settings), config)
    try:
        asyncio.run(worker.run())
    finally:
        if keeper:
            keeper.stop()
    if worker.stuck_threads:  # the interpreter's exit would join them, maybe forever
        logging.shutdown()
        os._exit(0)
    return 0


def _migrate(settings: ProcessSettings) -> int:
    from taskplatform import migrate
    from taskplatform.secrets import FileSecretSource

    logs.setup()
    for attempt in range(1, 31):  # PostgreSQL may still be starting when the deploy runs this
        try:
            migrate.upgrade(settings, FileSecretSource(settings.secrets_dir))
            logging.getLogger("taskplatform.migrate").info("schema at head")
            return 0
        except Exception as exc:  # noqa: BLE001
            if attempt == 30 or "password authentication failed" in str(exc):
                logging.getLogger("taskplatform.migrate").error("migration failed", extra={"reason": str(exc)[:500]})
                return 1
            time.sleep(1)
    return 1


def _db_setup(settings: ProcessSettings) -> int:
    from taskplatform import dbsetup
    from taskplatform.secrets import FileSecretSource

    logs.setup()
    log = logging.getLogger("taskplatform.dbsetup")
    for attempt in range(1, 31):  # PostgreSQL may still be starting when the deploy runs this
        try:
            for line in dbsetup.setup(settings, FileSecretSource(settings.secrets_dir)):
                log.info(line)
            return 0
        except Exception as exc:  # noqa: BLE001
            if attempt == 30 or "password authentication failed" in str(exc):
                log.error("database setup failed", extra={"reason": str(exc)[:500]})
                return 1
            time.sleep(1)
    return 1


def _consul_setup(settings: ProcessSettings) -> int:
    from taskplatform import consulsetup
    from taskplatform.secrets import FileSecretSource

    logs.setup()
    log = logging.getLogger("taskplatform.consulsetup")
    try:
        for line in consulsetup.setup(settings, FileSecretSource(settings.secrets_dir), settings.consul_env,
                                      [s for s in settings.consul_services.split(",") if s],
                                      consulsetup.read_seed(settings.config_file)):
            log.info(line)
    except (consulsetup.ConsulSetupError, OSError) as exc:
        log.error("Consul setup failed", extra={"reason": str(exc)[:500]})
        return 1
    return 0


def _queue_stats(settings: ProcessSettings) -> int:
    import json

    from taskplatform import queue_stats
    from taskplatform.secrets import for_process

    with queue_stats.connect(settings, for_process(settings)) as conn:
        print(json.dumps(queue_stats.read(conn, settings.kinds_packages), sort_keys=True))
    return 0


def _smoke(settings: ProcessSettings, args: argparse.Namespace) -> int:
    import json

    from taskplatform.secrets import for_process
    try:
        from taskplatform.release_smoke import Smoke
    except ImportError as exc:  # the image is built with the client (clients/python): one without it is broken
        print(json.dumps({"ok": False, "error": f"cannot load the smoke test: {exc} (the image must install "
                          "the Python client, shipyard-tasks-client: rebuild it with `make release`)"}), flush=True)
        return 1

    # The key set as the API reads it: its file, or Vault's copy (secrets.backend vault).
    report = Smoke(settings, for_process(settings), args.base_url, args.timeout,
                   args.preview_header).run()
    print(json.dumps(report), flush=True)  # one line, for the deploy to read
    return 0 if report["ok"] else 1


# An operator's token is for a person or a job to start with (e.g. to create the tenant's API
# keys): a day by default, 30 days at most; machine identities get theirs from their issuer.
TOKEN_DEFAULT_TTL_SECONDS = 86400
TOKEN_MAX_TTL_SECONDS = 30 * 86400


def _token(settings: ProcessSettings, args: argparse.Namespace) -> int:
    """A JWT for ``--tenant`` signed with the key set's signing key, on stdout alone (for a
    pipe); a refusal on stderr names the option and what to give. Nothing is logged."""
    import sys

    from taskplatform import auth, scopes
    from taskplatform.secrets import SecretError, for_process
    from taskplatform.storable import unstorable_text

    names = list(scopes.ALL) if args.scopes is None else [n.strip() for n in args.scopes.split(",") if n.strip()]
    problem = None
    if not 0 < len(args.tenant) <= auth.TENANT_MAX_LENGTH or unstorable_text(args.tenant):
        problem = f"--tenant: a tenant name of 1 to {auth.TENANT_MAX_LENGTH} characters (no NUL), got {args.tenant!r}"
    elif not 0 < args.ttl <= TOKEN_MAX_TTL_SECONDS:
        problem = f"--ttl: seconds in (0, {TOKEN_MAX_TTL_SECONDS}], got {args.ttl:g}"
    elif not names:
        problem = f"--scopes: name at least one of {','.join(scopes.ALL)}"
    try:
        if problem is None:
            scopes.parse_scopes(names)
            keys = auth.KeySet.parse(for_process(settings).get(auth.SECRET_NAME))
    except scopes.ScopeError as exc:
        problem = f"--scopes: {exc}"
    except (SecretError, auth.KeySetError) as exc:  # their messages never quote the key
        problem = f"the key set {auth.SECRET_NAME}: {exc}"
    if problem is not None:
        print(f"taskplatform token: {problem}", file=sys.stderr)
        return 2
    print(keys.issue(args.tenant, settings.jwt_issuer, settings.jwt_audience, args.ttl, tuple(names)), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taskplatform")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="serve the task API (uvicorn, TASKS_API_PROCESSES processes)")
    sub.add_parser("worker", help="process tasks from the Redis stream")
    sub.add_parser("migrate", help="alembic upgrade head")
    sub.add_parser("db-setup", help="create/update the platform's database roles (as the superuser)")
    sub.add_parser("consul-setup", help="create/update the platform's Consul policies and tokens, seed the runtime "
                                        "config (with the management token)")
    smoke = sub.add_parser("smoke", help="the release's smoke test: one task round trip through --base-url, "
                                          "served and run by this process's colour and version; one JSON line")
    smoke.add_argument("--base-url", required=True, help="the edge's preview server, e.g. http://edge:81")
    smoke.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole round trip (30)")
    smoke.add_argument("--preview-header", action="store_true",
                       help="send X-Shipyard-Preview: 1 itself (tests calling the API directly; the edge's "
                            "preview server sets it)")
    token = sub.add_parser("token", help="print a JWT for a tenant, signed with this container's key set "
                                         "(jwt_signing_key), with the API's issuer and audience")
    token.add_argument("--tenant", required=True, help="the tenant (the token's sub)")
    token.add_argument("--scopes", help="comma-separated, of tasks:read, tasks:write, schedules:write, "
                                        "webhooks:write, admin (default: every scope)")
    token.add_argument("--ttl", type=float, default=TOKEN_DEFAULT_TTL_SECONDS,
                       help=f"seconds until it expires ({TOKEN_DEFAULT_TTL_SECONDS}; at most {TOKEN_MAX_TTL_SECONDS})")
    sub.add_parser("queue-stats", help="what waits, runs and died, per queue and kind, from PostgreSQL, as JSON (make status)")
    sub.add_parser("migrations", help="the migrations this release carries and the destructive ones, as JSON "
                                      "(a release compares them with the live version's)")
    check = sub.add_parser("healthcheck", help="exit 0 when healthy (container health checks)")
    check.add_argument("what", choices=["api", "worker"])
    args = parser.parse_args(argv)
    if args.command == "healthcheck":
        return probe.check(args.what)  # before the settings import: probes must stay cheap
    if args.command == "migrations":  # no settings: run in an image with no environment at all
        import json

        from taskplatform.migrate import chain

        print(json.dumps(chain(), sort_keys=True))
        return 0
    from taskplatform.settings import ProcessSettings

    settings = ProcessSettings()
    if args.command == "api":
        return _api(settings)
    if args.command == "worker":
        return _worker(settings)
    if args.command == "migrate":
        return _migrate(settings)
    if args.command == "db-setup":
        return _db_setup(settings)
    if args.command == "consul-setup":
        return _consul_setup(settings)
    if args.command == "queue-stats":
        return _queue_stats(settings)
    if args.command == "smoke":
        return _smoke(settings, args)
    if args.command == "token":
        return _token(settings, args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
