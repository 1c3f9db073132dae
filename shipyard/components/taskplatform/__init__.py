"""The task platform (our own code in ``services/``): migrations (once per environment, before
any API or worker starts), the task API and its workers, all from one image.

Its image is built under both image sources, on the image's own Python base; the wheels it
installs are fetched once per deploy on the deploying machine for that Python (see
shipyard.image_plan), and the image hash covers only what goes into the image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shipyard import image_packages
from shipyard.component import (Component, ConfigDir, Health, Image, Metrics, Port, ReleaseCheck, SecretFile,
                                Service, Wait)
from shipyard.components import vault
from shipyard.components.edge import PREVIEW_PORT
from shipyard.components.taskplatform import consul_keys, keyset, kinds_packages
from shipyard.components.taskplatform.migrations import refusal
from shipyard.components.taskplatform.commands import COMMANDS
from shipyard.components.taskplatform.settings import AppSettings, RuntimeSettings

UID = 10001  # the task platform image's user
CONF = "/etc/taskplatform"
WORKER_METRICS_PORT = 9101  # the app's default worker_metrics_port
# Each process reads "postgres_password": the password of the role it connects as. Only the
# db-setup job gets the superuser's.
_PG_MIGRATOR = SecretFile("postgres_password", "pg_migrator_password")
# The API and workers log in to Vault under secrets.backend vault (vault.LOG_IN): it serves them
# everything they read (SecretFile.served) — their PostgreSQL users from its database engine,
# the rest as KV copies they keep current, so a rotation reaches them without a restart.
_PG_APP = SecretFile("postgres_password", "pg_app_password", served=True)
_REDIS = SecretFile("redis_password", "redis_password", served=True)
_SENTINEL = SecretFile("sentinel_password", "sentinel_password", served=True)
_DB_SETUP_SECRETS = (SecretFile("postgres_admin_password", "postgres_password"),
                     SecretFile("migrator_password", "pg_migrator_password"),
                     SecretFile("app_password", "pg_app_password"),
                     SecretFile("issuer_password", "pg_issuer_password"))
# Consul: each service reads the runtime config with a token of its own (read of its prefix and
# the shared one); the consul-setup job, alone with the management token, makes them.
_CONSUL_SERVICES = ("api", "worker")
_CONSUL_SETUP_SECRETS = (SecretFile("consul_admin_token", "consul_management_token"),
                         *(SecretFile(f"consul_token_{s}", f"consul_token_{s}") for s in _CONSUL_SERVICES))


def _environment(ctx, inst) -> dict[str, str]:
    app, postgres, redis = ctx.section("app"), ctx.section("postgres"), ctx.section("redis")
    master = ctx.endpoints("redis", "redis")[0]
    return {
        # Every PostgreSQL node: the app writes to whichever accepts writes (so a promotion needs
        # no redeploy) and sends reads that tolerate lag to a replica when one is up.
        "TASKS_PG_HOSTS": ",".join(str(e) for e in ctx.endpoints("postgres", "postgres")
                                   + ctx.endpoints("postgres", "postgres-replica")),
        "TASKS_PG_DATABASE": postgres.database, "TASKS_PG_USER": app.db_app_role,
        "TASKS_REDIS_HOST": master.host, "TASKS_REDIS_PORT": str(master.port),
        # With Sentinels the app asks them for the current master (TASKS_REDIS_HOST/PORT unused).
        "TASKS_REDIS_SENTINELS": ",".join(str(e) for e in ctx.endpoints("redis", "redis-sentinel")),
        "TASKS_REDIS_MASTER_NAME": redis.master_name,
        "TASKS_SECRETS_DIR": "/run/secrets",
        "TASKS_CONFIG_FILE": f"{CONF}/runtime.json",
        # Blue-green (shipyard.bluegreen): the colour this container belongs to and the version
        # it runs, which follows the host's release state like its image does.
        **({"TASKS_RELEASE_COLOUR": inst.colour} if inst.colour else {}),
        "TASKS_BUILD_VERSION": ctx.release_version(inst),
        "TASKS_API_PROCESSES": str(app.api_processes),
        "TASKS_API_MAX_CONCURRENT_REQUESTS": str(app.api_max_concurrent_requests),
        "TASKS_API_MAX_BODY_BYTES": str(app.api_max_body_bytes),
        "TASKS_API_MAX_PAGE_SIZE": str(app.api_max_page_size),
        "TASKS_JWT_ISSUER": app.jwt_issuer,
        "TASKS_JWT_AUDIENCE": app.jwt_audience,
        # The kinds packages the image was built with (app.kinds_packages): their modules named,
        # the rest found by their entry points.
        "TASKS_KINDS_PACKAGES": kinds_packages.modules_variable(ctx.settings),
        # The runtime config: the document at this key of the Consul servers (the file above
        # seeds it once, through consul-setup).
        "TASKS_CONSUL_ADDRS": ",".join(str(e) for e in ctx.endpoints("consul", "consul")),
        "TASKS_CONSUL_RUNTIME_PATH": consul_keys.runtime_key(ctx.env),
    }


VAULT_STATE_DIR = "/run/taskplatform-vault"
# What the credential keeper says of its lease, nothing secret (services/taskplatform/db_credentials.py:
# STATUS_FILE): read by `make status` (status.py).
LEASE_FILE = f"{VAULT_STATE_DIR}/lease.json"


def _vault_environment(ctx, inst) -> dict[str, str]:
    """secrets.backend vault: the process logs in with its AppRole and the wrapped secret-id the
    deploy hands it (vault's live setup), and takes its PostgreSQL users from the database
    engine (services/README.md, "PostgreSQL credentials from Vault")."""
    # Any server answers (a standby forwards to the leader): this host's own when it has one,
    # reached as the servers reach each other.
    servers = ctx.instances_of("vault", "vault")
    here = [n for n, server in enumerate(servers) if server.host.name == ctx.host.name]
    server = ctx.peer_endpoints("vault", "vault", vault.API_PORT)[here[0] if here else 0]
    return {"TASKS_VAULT_ADDR": f"https://{server}",
            "TASKS_VAULT_CA_FILE": f"{vault.HANDOFF}/{vault.CA_FILE}",
            "TASKS_VAULT_ROLE_ID": vault.role_id(inst.service.name),
            "TASKS_VAULT_WRAPPED_SECRET_ID": f"{vault.HANDOFF}/{vault.WRAPPED_SECRET_ID}",
            # Kept across restarts of the container (a crash, a reboot): resumed, not a new login.
            "TASKS_VAULT_TOKEN_FILE": f"{vault.HANDOFF}/token",
            "TASKS_VAULT_DB_ROLE": ctx.section("app").db_app_role,
            # Everything else it reads: its KV copies (SecretFile.served), read again this often
            # or at once when the deploy asks (after a rotation), the versions it holds reported
            # where the deploy looks.
            "TASKS_VAULT_KV_PATH": vault.kv_path(inst.service.name),
            "TASKS_VAULT_KV_POLL_SECONDS": str(ctx.section("vault").kv_poll_s),
            "TASKS_VAULT_REPORT_FILE": vault.HELD_FILE,
            "TASKS_VAULT_REFRESH_FILE": vault.REFRESH_FILE,
            "TASKS_VAULT_STATE_DIR": VAULT_STATE_DIR}


def compose_service(ctx, inst) -> dict[str, Any]:
    app = ctx.section("app")
    env = _environment(ctx, inst)
    if inst.service.name == "migrate":
        env["TASKS_PG_USER"] = app.db_migrator_role
    elif inst.service.name == "consul-setup":
        env = {k: v for k, v in env.items() if k.startswith("TASKS_CONSUL_") or k in ("TASKS_SECRETS_DIR", "TASKS_CONFIG_FILE")
               } | {"TASKS_CONSUL_ENV": ctx.env, "TASKS_CONSUL_SERVICES": ",".join(_CONSUL_SERVICES)}
    elif inst.service.name == "db-setup":
        env = {k: v for k, v in env.items() if k.startswith("TASKS_PG_") and k != "TASKS_PG_USER"} | {
            "TASKS_PG_ADMIN_USER": ctx.section("postgres").user, "TASKS_PG_MIGRATOR_ROLE": app.db_migrator_role,
            "TASKS_PG_APP_ROLE": app.db_app_role, "TASKS_PG_ISSUER_ROLE": app.db_issuer_role,
            "TASKS_SECRETS_DIR": "/run/secrets"}
    doc: dict[str, Any] = {"command": ["taskplatform", inst.service.name], "environment": env}
    if ("taskplatform", inst.service.name) in vault.LOG_IN and ctx.section("secrets").backend == "vault":
        doc["environment"] |= _vault_environment(ctx, inst)
        # What Vault gave the process (its PostgreSQL user, for the API's uvicorn processes): in
        # memory only, the service's alone.
        doc["tmpfs"] = [f"{VAULT_STATE_DIR}:uid={UID},gid={UID},mode=0700"]
    if inst.service.one_shot:
        return doc
    doc["stop_grace_period"] = "30s" if inst.service.name == "worker" else "20s"
    doc["mem_limit"] = f"{app.memory_limit_mb}m"
    return doc


# The official Python client (clients/python, import name shipyard_tasks): the release's smoke
# test (`taskplatform smoke`) calls the API through it, so the image installs its wheel, built on
# the deploying machine like a kinds package, its dependencies (httpx) from the platform's pins.
# Its files are in the image's source hash and a release's default version: a changed client is a
# new image, smoke-tested before users meet it.
CLIENT_PACKAGE = image_packages.PythonPackage(path="clients/python")


def image_python_packages(settings) -> tuple[image_packages.PythonPackage, ...]:
    """What the platform's image installs beside its own wheel: the client, then the kinds packages."""
    return (CLIENT_PACKAGE, *kinds_packages.packages(settings))


def release_smoke(settings) -> tuple[str, tuple[str, ...]]:
    """In the API of the colour a release starts: a task created through the router's preview
    route, run by that colour's workers (`taskplatform smoke`, services/README.md)."""
    return "api", ("taskplatform", "smoke", "--base-url", f"http://router:{PREVIEW_PORT}",
                   "--timeout", str(settings.release.smoke_timeout_seconds))


def template_context(ctx) -> dict[str, Any]:
    runtime = ctx.section("runtime").model_dump(mode="json")
    return {"runtime_json": json.dumps(runtime, indent=2, sort_keys=True)}


def _checks():
    from shipyard.components.taskplatform import checks  # pytest and HTTP clients: loaded by `make verify` only

    return checks


def _describe(settings, containers):
    from shipyard.components.taskplatform.status import describe  # only when `make status` asks

    return describe(settings, containers)


COMPONENT = Component(
    name="taskplatform",
    folder=Path(__file__).parent,
    settings={"app": AppSettings, "runtime": RuntimeSettings},
    checkout_problems=kinds_packages.checkout_problems,
    uses=("postgres", "redis", "consul"),
    images=(
        Image("python", official="python:3.11-slim-bookworm", local="shipyard/python:3.11",
              local_context="shipyard/components/taskplatform/python-image"),
        Image("taskplatform", local="shipyard/taskplatform", build_context="services",
              build_include=("Dockerfile", "pyproject.toml", "requirements.txt", "taskplatform"),
              build_base="python", wheelhouse="requirements.txt", tag=lambda s: s.app.version,
              # The Python client, and the task kinds: the demo kinds' package by default, a team's
              # own beside or instead.
              packages=image_python_packages),
    ),
    config_dirs=(ConfigDir("taskplatform", CONF),),
    services=(
        # The platform's own database roles, as the superuser (only this job has its password).
        Service("db-setup", "app", "app", "taskplatform", UID, secrets=_DB_SETUP_SECRETS, one_shot=True,
                placement="once", serves_clients=False),
        Service("consul-setup", "app", "app", "taskplatform", UID, secrets=_CONSUL_SETUP_SECRETS, one_shot=True,
                placement="once", serves_clients=False, config_dir="taskplatform"),
        Service("migrate", "app", "app", "taskplatform", UID, secrets=(_PG_MIGRATOR,), one_shot=True, placement="once",
                serves_clients=False, waits=(Wait("db-setup", "service_completed_successfully"),)),
        Service("api", "app", "app", "taskplatform", UID, secrets=(_PG_APP, _REDIS, _SENTINEL,
                                                                   SecretFile("jwt_signing_key", "jwt_signing_key", served=True),
                                                                   SecretFile("consul_token", "consul_token_api", served=True)),
                config_dir="taskplatform", hot_reload=True, coloured=True,
                port=Port(8000, "api_direct", None, "loopback port publishing the API directly (benchmarks; green: "
                                                   "the next port); null to not publish"),
                health=Health(("taskplatform", "healthcheck", "api"), start_period_s=60),
                # Aggregated over the container's uvicorn processes (multiprocess mode): one target.
                metrics=Metrics(8000),
                waits=(Wait("migrate", "service_completed_successfully"),
                       Wait("consul-setup", "service_completed_successfully"))),
        Service("worker", "app", "app", "taskplatform", UID, secrets=(_PG_APP, _REDIS, _SENTINEL,
                                                                      SecretFile("consul_token", "consul_token_worker", served=True)),
                config_dir="taskplatform", coloured=True,
                hot_reload=True, serves_clients=False, scale=lambda s: s.app.worker_replicas,
                health=Health(("taskplatform", "healthcheck", "worker"), start_period_s=60),
                # Its own metrics server (services/taskplatform/settings.py: worker_metrics_port).
                metrics=Metrics(WORKER_METRICS_PORT),
                waits=(Wait("migrate", "service_completed_successfully"),
                       Wait("consul-setup", "service_completed_successfully"))),
    ),
    compose_service=compose_service,
    template_context=template_context,
    release_smoke=release_smoke,
    # Expand/contract (migrations.py): the live version must keep working on the new schema.
    release_check=ReleaseCheck("api", ("taskplatform", "migrations"), refusal),
    secret_formats={f"consul_token_{s}": "uuid" for s in _CONSUL_SERVICES},
    # A rotated key set keeps the keys of the tokens still valid: no one is logged out.
    successors={"jwt_signing_key": keyset.next_key_set},
    checks=_checks,
    commands=COMMANDS,
    describe=_describe,
)
