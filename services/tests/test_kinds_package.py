"""A team's own task kinds, from a package outside the platform (``tests/fixtures/acme_kinds``,
found by its entry point, no setting): the API validates and publishes them, two workers run
them, and whatever their code does (raise, SystemExit, block, crash or hang its process) no
worker goes down and every attempt is counted. Delays: a task created with ``delay_seconds`` or
``run_at`` is not run before its time, and runs once, with two workers racing for it.
A real PostgreSQL, Redis, API and two workers of their own."""

import datetime as dt
import signal
import time
from pathlib import Path

import pytest
import requests

from conftest import Tenant, wait_worker_ready
from taskplatform_testing.servers import SERVICES, free_port, start_platform

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def acme():
    """(platform, API URL, workers with a metrics port each), all with acme's package on their path."""
    started = start_platform(task_timeout_seconds_by_kind={"acme-crash": 2})
    path = f"{SERVICES}:{FIXTURES}"
    try:
        url = started.start_api(processes=1, PYTHONPATH=path)
        workers = []
        for _ in range(2):
            port = free_port()
            worker = started.start_worker(PYTHONPATH=path, TASKS_WORKER_METRICS_PORT=port)
            worker.metrics = f"http://127.0.0.1:{port}/metrics"
            workers.append(worker)
        for worker in workers:
            wait_worker_ready(worker)
        yield started, url, workers
    finally:
        started.stop()


@pytest.fixture
def tenant(acme) -> Tenant:
    platform, url, _ = acme
    return Tenant(url, platform)


def create(tenant: Tenant, kind: str, payload: dict | None = None, **timing):
    body = {"kind": kind, **({"payload": payload} if payload is not None else {}), **timing}
    return tenant.session.post(f"{tenant.base}/v1/tasks", json=body, timeout=10)


def scrape_kind(workers, name: str, kind: str | None = None) -> float:
    """A worker metric summed over the workers (and, with ``kind``, that kind's series)."""
    total = 0.0
    for worker in workers:
        for line in requests.get(worker.metrics, timeout=5).text.splitlines():
            if line.startswith(name + ("{" if kind else "")) and (kind is None or f'kind="{kind}"' in line):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_openapi_publishes_the_packages_payload_models(acme):
    _, url, _ = acme
    doc = requests.get(f"{url}/openapi.json", timeout=10).json()
    schemas = doc["components"]["schemas"]
    invoice = schemas["CreateAcmeInvoiceTask"]["properties"]
    assert invoice["kind"]["const"] == "acme-invoice"
    assert invoice["payload"]["required"] == ["customer", "lines"]
    assert invoice["payload"]["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/Line"}
    assert schemas["Line"]["required"] == ["sku", "quantity", "cents"]  # the nested model, in the components
    assert {"CreateChecksumTask", "CreateSleepTask", "CreateSmokeTask", "CreateAcmeStampTask"} <= set(schemas)
    # Required where {} does not fit the kind's model: a client that leaves it out is told which fields lack.
    assert "payload" in schemas["CreateAcmeInvoiceTask"]["required"] and "payload" in schemas["CreateSleepTask"]["required"]
    assert "payload" not in schemas["CreateChecksumTask"]["required"]
    assert schemas["CreateSleepTask"]["not"] == {"required": ["run_at", "delay_seconds"]}


def test_the_api_validates_a_packages_payloads(tenant):
    refused = create(tenant, "acme-invoice", {"customer": "x", "lines": [{"sku": "a", "quantity": 0, "cents": 1}]})
    assert refused.status_code == 422 and "payload.lines.0.quantity" in refused.json()["message"], refused.text
    left_out = create(tenant, "acme-stamp")
    assert left_out.status_code == 422 and "payload.log: Field required" in left_out.json()["message"], left_out.text


def test_the_workers_run_a_packages_kinds_in_a_thread_and_in_a_process(acme, tenant):
    _, _, workers = acme
    invoice = create(tenant, "acme-invoice", {"customer": "c-1", "lines": [{"sku": "a", "quantity": 3, "cents": 250},
                                                                           {"sku": "b", "quantity": 1, "cents": 99}]})
    digest = create(tenant, "acme-digest", {"rounds": 20000})
    invoiced, digested = tenant.wait_for(invoice.json()["id"]), tenant.wait_for(digest.json()["id"])
    pids = {worker.pid for worker in workers}
    assert invoiced["status"] == "succeeded" and invoiced["result"]["total_cents"] == 849, invoiced
    assert invoiced["result"]["process"] in pids  # a thread of a worker
    assert digested["status"] == "succeeded" and digested["result"]["process"] not in pids, digested  # its own process
    assert digested["result"]["attempt"] == 1


@pytest.mark.parametrize("kind, how, error", [
    ("acme-misbehave", "raise", "RuntimeError: acme's code failed"),
    ("acme-misbehave", "exit", "SystemExit: 3"),
    ("acme-crash", "crash", "the attempt's process ended without an outcome (exit code 7)"),
    ("acme-crash", "hang", "TimeoutError: attempt 3 ran longer than 2 s"),
])
def test_misbehaving_code_fails_its_task_not_the_worker(acme, tenant, kind, how, error):
    _, _, workers = acme
    failed_before, dead_before = scrape_kind(workers, "tasks_failed_total", kind), scrape_kind(workers, "tasks_dead_total", kind)
    dead = tenant.wait_for(create(tenant, kind, {"how": how}).json()["id"], timeout=60)
    assert dead["status"] == "dead" and dead["attempts"] == 3 and error in dead["error"], dead
    assert all(worker.poll() is None for worker in workers)  # both workers still run
    assert scrape_kind(workers, "tasks_failed_total", kind) == failed_before + 2  # attempts retried
    assert scrape_kind(workers, "tasks_dead_total", kind) == dead_before + 1


def test_blocking_code_does_not_hold_up_the_worker(acme, tenant):
    # Not a time bound (a loaded machine stretches any): the quick task ends while both blocking
    # bodies still run. Held up behind them, it would end only after they did.
    blocking = [create(tenant, "acme-misbehave", {"how": "block", "seconds": 8}).json()["id"] for _ in range(2)]
    quick = tenant.wait_for(create(tenant, "checksum", {"n": 1}).json()["id"], timeout=20)
    assert quick["status"] == "succeeded", quick
    assert all(tenant.get(task_id).json()["status"] == "running" for task_id in blocking)
    assert all(tenant.wait_for(task_id)["status"] == "succeeded" for task_id in blocking)


def test_delayed_tasks_run_after_their_time_once_across_two_workers(acme, tenant, tmp_path):
    log = tmp_path / "runs.log"
    at = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)).isoformat()
    tasks = [create(tenant, "acme-stamp", {"log": str(log)}, delay_seconds=2).json() for _ in range(10)]
    tasks += [create(tenant, "acme-stamp", {"log": str(log)}, run_at=at).json() for _ in range(10)]
    assert {task["status"] for task in tasks} == {"scheduled"}
    due = {task["id"]: dt.datetime.fromisoformat(task["run_after"]).timestamp() for task in tasks}
    while time.time() < min(due.values()) - 0.2:  # before their time: scheduled, not run
        assert {tenant.get(task_id).json()["status"] for task_id in due} == {"scheduled"}
        time.sleep(0.2)
    done = {task_id: tenant.wait_for(task_id, timeout=20) for task_id in due}
    assert {task["status"] for task in done.values()} == {"succeeded"}
    assert all(task["attempts"] == 1 and task["result"]["ran_at"] >= due[task_id] for task_id, task in done.items())
    runs = [line.split()[0] for line in log.read_text().splitlines()]
    assert sorted(runs) == sorted(due)  # each ran once


def test_a_worker_stops_on_sigterm_while_a_body_blocks_its_thread(acme, tenant):
    """Last in this module: it replaces the two workers with one of a short grace period."""
    platform, _, workers = acme
    platform.stop_processes(chosen=list(workers))
    worker = platform.start_worker(PYTHONPATH=f"{SERVICES}:{FIXTURES}", TASKS_SHUTDOWN_GRACE_SECONDS=1)
    wait_worker_ready(worker)
    task_id = create(tenant, "acme-misbehave", {"how": "block", "seconds": 60}).json()["id"]
    tenant.wait_for(task_id, statuses=("running",), timeout=20)
    stopped = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0 and time.monotonic() - stopped < 10  # not the 60 s of the body's thread
    handed_back = tenant.get(task_id).json()
    assert handed_back["status"] == "queued" and handed_back["attempts"] == 0, handed_back  # its attempt given back


def test_a_kinds_strings_and_free_form_keys_are_published_nul_free_as_the_store_requires():
    """What the platform refuses in any payload (it cannot be stored) is in the OpenAPI of every
    kind, a team's too, whose model rarely says it: a request the document allows is accepted."""
    from taskplatform.schemas import NUL_FREE, _storable

    model = {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 10},
        "code": {"type": "string", "pattern": "^[A-Z]+$"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "extra": {"type": "object", "additionalProperties": {"type": "integer"}}}}
    out = _storable(model)["properties"]
    assert out["name"] == {"type": "string", "maxLength": 10, "pattern": NUL_FREE}
    assert out["code"] == {"allOf": [{"type": "string", "pattern": "^[A-Z]+$"}, {"pattern": NUL_FREE}]}
    assert out["tags"]["items"]["pattern"] == NUL_FREE
    assert out["extra"]["propertyNames"] == {"$ref": "#/components/schemas/StorableText"}
