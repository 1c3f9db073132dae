"""``SHIPYARD.app`` (the build and its processes) and ``SHIPYARD.runtime`` (the initial
runtime config, hot-reloaded later through the config source)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from shipyard.component import Strict
from shipyard.image_packages import PythonPackage

_IDENT = r"^[a-z_][a-z0-9_]{0,62}$"
# The app's bounds (services/taskplatform/runtime_config.py: RetentionSeconds): a minute to ten years.
_Retention = Annotated[float, Field(ge=60, le=315_360_000)]


class QueueRuntimeSettings(Strict):
    """One queue's limits (services/README.md, "Queues and priorities"); null: the default."""

    concurrency: int | None = Field(None, ge=1, le=256, description="attempts of this queue one worker runs at once; "
                                                                    "null: worker_concurrency")
    rate_per_second: float | None = Field(None, gt=0, le=10_000, description="attempts of this queue all workers "
                                                                            "together start per second at most "
                                                                            "(cluster-wide); null: no limit")


class RuntimeSettings(Strict):
    """Initial runtime config of the task platform (hot-reloadable later through the config source)."""

    version: str = Field("1", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    rate_limit_per_minute: int = Field(6000, gt=0)
    worker_concurrency: int = Field(4, ge=1, le=64)
    task_max_attempts: int = Field(5, ge=1)
    retry_base_seconds: float = Field(1.0, gt=0)
    retry_max_seconds: float = Field(60.0, gt=0)
    reconcile_after_seconds: float = Field(30.0, gt=0)
    task_timeout_seconds: float = Field(300.0, gt=0, le=86400, description="a task attempt running longer fails")
    task_timeout_seconds_by_kind: dict[str, float] = Field(default_factory=dict,
                                                           description="per-kind timeouts (the app rejects unknown kinds)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    maintenance: bool = Field(False, description="the API refuses writes (503 maintenance); reads and workers go on")
    maintenance_retry_after_seconds: int = Field(30, ge=1, le=3600, description="Retry-After of those refusals")
    enabled_kinds: list[str] | None = Field(None, description="task kinds the API accepts and workers run; "
                                                              "null: all (the app rejects unknown kinds)")
    # Finished tasks deleted this long after they finished (null: kept); a tenant's period
    # overrides its kinds', a kind's the default (services/README.md, "Retention").
    retention_seconds: _Retention | None = Field(None, description="finished tasks are deleted after this; null: kept")
    retention_seconds_by_kind: dict[str, _Retention] = Field(default_factory=dict,
                                                             description="per-kind retention (the app rejects unknown kinds)")
    retention_seconds_by_tenant: dict[str, _Retention] = Field(default_factory=dict, description="per-tenant retention")
    # Webhooks (services/README.md, "Webhooks"): retries, per-attempt timeout, deliveries in
    # flight per worker; private receivers only where the environment's own network holds them.
    webhook_max_attempts: int = Field(8, ge=1, le=50, description="attempts of a delivery before it fails")
    webhook_retry_base_seconds: float = Field(10.0, gt=0, le=86400, description="first retry's backoff bound")
    webhook_retry_max_seconds: float = Field(3600.0, gt=0, le=86400, description="longest backoff between attempts")
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120, description="one delivery attempt's limit")
    webhook_concurrency: int = Field(16, ge=1, le=256, description="deliveries in flight per worker")
    webhook_allow_private_addresses: bool = Field(False, description="deliver to loopback, private and link-local "
                                                                     "addresses (refused by default: SSRF)")
    webhook_allowed_networks: list[str] = Field(default_factory=list, description="CIDRs every receiver address "
                                                "must lie in (empty: any the rule above allows)")
    webhook_delivery_retention_seconds: _Retention | None = Field(
        None, description="finished webhook deliveries and their log are deleted after this; null: kept")
    # The app's bound (services/taskplatform/runtime_config.py: BATCH_MAX_TASKS_BOUND).
    batch_max_tasks: int = Field(100, ge=1, le=1000, description="the most tasks one POST /v1/tasks/batch creates")
    # Schedules (services/README.md, "Schedules"): the most per tenant, the shortest spacing.
    schedules_max_per_tenant: int = Field(100, ge=1, le=100_000, description="the most schedules one tenant has "
                                                                            "(one more: 409 schedule_limit_reached)")
    schedule_min_interval_seconds: int = Field(60, ge=1, le=86_400, description="the shortest spacing of a schedule's "
                                               "occurrences (closer: 400 schedule_too_frequent)")
    # Per queue (a kind declares its queue): its own slots in each worker, its start rate over all.
    queues: dict[str, QueueRuntimeSettings] = Field(default_factory=dict,
                                                    description="per-queue concurrency per worker and rate limit "
                                                                "over the cluster "
                                                                "(the app rejects queues no kind declares)")


# The platform's demo kinds (checksum, sleep, fail): a package of kinds like a team's, in
# Shipyard's own source tree (absolute, so an inventory kept elsewhere still finds it).
DEMO_KINDS_PATH = str(Path(__file__).resolve().parents[3] / "services" / "taskplatform_demo_kinds")
DEMO_KINDS_MODULE = "taskplatform_demo_kinds"
_MODULE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


class KindsPackage(PythonPackage):
    """A package of task kinds the image installs (docs/task-platform.md, "Task kinds")."""

    modules: list[Annotated[str, Field(pattern=_MODULE)]] = Field(
        default_factory=list, description="import paths the API and workers load (TASKS_KINDS_PACKAGES); empty: "
                                          "the modules the package names in the entry-point group taskplatform.kinds")


def _demo_kinds() -> list[KindsPackage]:
    # Named by module too: an image built before the demo kinds were a package of their own has
    # them inside the platform's wheel, without the entry point.
    return [KindsPackage(path=DEMO_KINDS_PATH, modules=[DEMO_KINDS_MODULE])]


class AppSettings(Strict):
    version: str = Field("0.1.0", pattern=r"^[0-9A-Za-z._-]{1,64}$", description="the task platform's first version (image tag); "
                         "`make release` ships later ones, and a deploy keeps what is live")
    api_processes: int = Field(2, ge=1, le=64, description="uvicorn worker processes in the API container")
    # The packages of task kinds built into the image (shipyard.image_packages): each a project
    # path, a wheel or a pinned requirement; a changed package is a new image and release version.
    kinds_packages: list[KindsPackage] = Field(default_factory=_demo_kinds, description="packages of task kinds the "
                                               "image installs: [{path|wheel|requirement, modules}]; the platform's "
                                               "demo kinds by default (list them too to keep them)")
    worker_replicas: int = Field(1, ge=0, le=32, description="worker containers per app host")
    memory_limit_mb: int = Field(512, ge=128)
    # What one API process takes on (beyond: 503 overloaded, 413, 422; see services/README.md).
    api_max_concurrent_requests: int = Field(32, ge=1, description="requests in flight per API process")
    api_max_body_bytes: int = Field(65536, ge=1024, description="largest request body the API reads")
    api_max_page_size: int = Field(100, ge=1, le=1000, description="largest `limit` of GET /v1/tasks")
    # Bearer tokens must name these (the key set is the secret jwt_signing_key).
    jwt_issuer: str = Field("shipyard", min_length=1, description="the `iss` the API requires in tokens")
    jwt_audience: str = Field("taskplatform", min_length=1, description="the `aud` the API requires in tokens")
    # Its own PostgreSQL roles (created by the db-setup job as the superuser): migrations run as
    # the schema owner, the API and workers as a role that may only read and write rows.
    db_migrator_role: str = Field("tasks_migrator", pattern=_IDENT, description="role that owns the schema (migrations)")
    db_app_role: str = Field("tasks_app", pattern=_IDENT, description="role of the API and workers (rows only)")
    db_issuer_role: str = Field("tasks_issuer", pattern=_IDENT,
                                description="role that makes short-lived members of the two above (Vault's "
                                            "database engine): CREATEROLE, never a superuser")
