"""schemathesis against the API's own OpenAPI (/openapi.json), every check: no server error, no
status or content the OpenAPI does not document, schema-valid requests accepted, invalid ones
refused, unsupported methods answered 405 with Allow. Bounded: examples per operation in
schemathesis.toml, the whole run by MAX_SECONDS. Against a real API process, PostgreSQL and Redis of its own."""

import inspect

import pytest

from taskplatform_testing.app import built_app, openapi_document
from taskplatform_testing.schemathesis_run import run_schemathesis
from taskplatform_testing.servers import start_platform

MAX_SECONDS = 60


@pytest.fixture(scope="module")
def own_platform():
    """A PostgreSQL, Redis and API of its own: the thousands of tasks schemathesis creates
    (sleeps of up to 30 s among them) must not queue ahead of other tests' tasks."""
    started = start_platform()
    try:
        yield started, started.start_api(processes=2)
    finally:
        started.stop()


def test_the_api_keeps_to_its_openapi(own_platform, tmp_path):
    platform, api_url = own_platform
    run = run_schemathesis(f"{api_url}/openapi.json", f"Bearer {platform.token('tenant-schemathesis')}",
                           MAX_SECONDS, tmp_path, "--seed", "10")
    assert run.returncode == 0, run.output[-20000:]
    # It ran every operation of the OpenAPI, and every check held (not_a_server_error: 0 server
    # errors; status_code_conformance: 0 undocumented statuses; and the rest).
    assert run.operations >= 10, run.output[-5000:]
    assert run.problems == 0, run.output[-20000:]


@pytest.fixture(scope="module")
def document() -> dict:
    """The OpenAPI of an app built as an API process builds it (no connections are opened)."""
    return openapi_document()


def operations(document: dict) -> dict[str, tuple[str, dict]]:
    """operationId → (path, operation)."""
    return {op["operationId"]: (path, op) for path, item in document["paths"].items() for op in item.values()}


@pytest.mark.parametrize("operation, status, linked", [
    ("create_task", "202", {"get_task", "cancel_task", "retry_task"}),
    ("create_task_batch", "202", {"get_task", "cancel_task", "retry_task"}),
    ("create_schedule", "201", {"get_schedule", "pause_schedule", "resume_schedule", "delete_schedule"}),
    ("create_webhook", "201", {"get_webhook", "list_deliveries", "rotate_webhook_secret", "delete_webhook"}),
])
def test_a_created_object_links_to_what_can_be_done_with_it(document, operation, status, linked):
    """What schemathesis' stateful phase follows: without these links it never reached a task
    that exists. Each link names an operation of the document and fills its path parameter from
    the answer."""
    by_id = operations(document)
    links = by_id[operation][1]["responses"][status]["links"]
    assert {link["operationId"] for link in links.values()} == linked
    for link in links.values():
        path, target = by_id[link["operationId"]]
        (parameter, expression), = link["parameters"].items()
        assert f"{{{parameter}}}" in path and expression.startswith("$response.body#/")
        assert any(p["name"] == parameter and p["in"] == "path" for p in target["parameters"])


def test_the_new_operations_have_examples_and_their_errors_documented(document):
    by_id = operations(document)
    schemas = document["components"]["schemas"]
    assert schemas["CreateTaskBatch"]["examples"] and schemas["Rotation"]["examples"]
    batch = by_id["create_task_batch"][1]
    assert {"400", "409", "422", "429"} <= set(batch["responses"]) and "all or nothing" in batch["description"].lower()
    assert batch["x-required-scope"] == "tasks:write"
    for operation in ("rotate_webhook_secret", "set_callback_secret", "list_callback_deliveries", "redeliver_callback"):
        assert by_id[operation][1]["x-required-scope"] == "webhooks:write"
        assert by_id[operation][1]["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/ErrorBody")


def _sync_dependencies(dependant, route: str) -> list[str]:
    found = []
    for dep in dependant.dependencies:
        call = dep.call
        target = call if inspect.isfunction(call) else getattr(call, "__call__", call)
        if not inspect.iscoroutinefunction(target):
            found.append(f"{route}: {getattr(call, '__qualname__', repr(call))}")
        found += _sync_dependencies(dep, route)
    return found


def test_no_route_runs_a_dependency_in_the_thread_pool():
    """FastAPI runs a plain-function dependency in its thread pool: a hop to a thread and back on
    every request (issue 23's submit rate: ``deps.task_colour`` was one on every create)."""
    app = built_app()
    found = [name for route in app.routes if hasattr(route, "dependant")
             for name in _sync_dependencies(route.dependant, f"{sorted(route.methods)} {route.path}")]
    assert found == [], found
