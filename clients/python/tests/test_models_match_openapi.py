"""The client against the API's OpenAPI, as the app builds it (no server needed): each answer
model has the fields of the document's schema, required where the document requires them; every
call the client makes is an operation of the document, with parameters and body fields it
declares. An API change the client does not follow fails here."""

from __future__ import annotations

import datetime as dt
import typing

import pytest
from pydantic import BaseModel

from shipyard_tasks import calls, models
from taskplatform_testing.app import openapi_document

MODELS = [models.Task, models.TaskPage, models.TaskBatch, models.TaskBatchItem, models.ApiKey, models.CreatedApiKey,
          models.ApiKeyList, models.ErrorBody, models.Webhook, models.CreatedWebhook, models.WebhookPage,
          models.CallbackSecret, models.Delivery, models.DeliveryAttempt, models.DeliveryPage]


@pytest.fixture(scope="module")
def document() -> dict:
    """The OpenAPI of an app built as an API process builds it (no connections are opened)."""
    return openapi_document()


def schema(document: dict, ref_or_name: str) -> dict:
    return document["components"]["schemas"][ref_or_name.rsplit("/", 1)[-1]]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_each_answer_model_has_the_fields_the_document_gives_and_requires(document, model: type[BaseModel]):
    documented = schema(document, model.__name__)
    assert set(model.model_fields) == set(documented["properties"]), \
        f"{model.__name__}: client fields differ from the OpenAPI's {model.__name__}"
    required = {name for name, info in model.model_fields.items() if info.is_required()}
    assert required == set(documented.get("required", [])), f"{model.__name__}: required fields differ"


def test_the_task_statuses_are_the_documents(document):
    assert set(typing.get_args(models.TaskStatus)) == set(schema(document, "Task")["properties"]["status"]["enum"])


CALLS = {
    "create_task": calls.create_task(calls.NewTask("checksum", {"a": 1}, delay_seconds=5)),
    "create_task at": calls.create_task(calls.NewTask("checksum", None, "key", run_at=dt.datetime.now(dt.timezone.utc),
                                                      priority=7, callback_url="https://hooks.example.com/cb")),
    "create_tasks": calls.create_tasks([calls.NewTask("checksum", {"a": 1}, "key-1", priority=2),
                                        calls.NewTask("checksum", delay_seconds=5, callback_url="https://h.example/")]),
    "get_task": calls.get_task("0b6f1c8e-6d0e-4f4e-9d55-6a2b9b3c1a10"),
    "list_tasks": calls.list_tasks("queued", "checksum", 10, "cursor"),
    "cancel_task": calls.cancel_task("0b6f1c8e-6d0e-4f4e-9d55-6a2b9b3c1a10"),
    "retry_task": calls.retry_task("0b6f1c8e-6d0e-4f4e-9d55-6a2b9b3c1a10"),
    "create_api_key": calls.create_api_key("ci", ["tasks:read"], 3600),
    "list_api_keys": calls.list_api_keys(),
    "revoke_api_key": calls.revoke_api_key("0123456789abcdef"),
    "create_webhook": calls.create_webhook("https://hooks.example.com/x", ["task.dead"], "ops"),
    "get_webhook": calls.get_webhook("0b6f1c8e-6d0e-4f4e-9d55-6a2b9b3c1a10"),
    "list_webhooks": calls.list_webhooks(10, "cursor"),
    "list_deliveries": calls.list_deliveries("0b6f1c8e-6d0e-4f4e-9d55-6a2b9b3c1a10", 10, "cursor"),
    "redeliver": calls.redeliver("0b6f1c8e-6d0e-4f4e-9d55-6a2b9b3c1a10", "1c6f1c8e-6d0e-4f4e-9d55-6a2b9b3c1a10"),
    "rotate_webhook_secret": calls.rotate_webhook_secret("0b6f1c8e-6d0e-4f4e-9d55-6a2b9b3c1a10", 3600),
    "set_callback_secret": calls.set_callback_secret(None),
    "list_callback_deliveries": calls.list_callback_deliveries(10, "cursor"),
    "redeliver_callback": calls.redeliver_callback("1c6f1c8e-6d0e-4f4e-9d55-6a2b9b3c1a10"),
}


def operation_of(document: dict, call: calls.Call) -> tuple[str, dict]:
    """The document's path template that the call's path fills, and its operation."""
    parts = call.path.split("/")
    for template, item in document["paths"].items():
        pieces = template.split("/")
        if len(pieces) == len(parts) and all(p == q or (q.startswith("{") and q.endswith("}"))
                                             for p, q in zip(parts, pieces)):
            if call.method.lower() in item:
                return template, item[call.method.lower()]
    raise AssertionError(f"{call.method} {call.path}: no such operation in the OpenAPI")


@pytest.mark.parametrize("name", list(CALLS))
def test_each_call_is_a_documented_operation_answering_the_calls_model(document, name):
    call = CALLS[name]
    template, operation = operation_of(document, call)
    successes = {status: answer for status, answer in operation["responses"].items() if status.startswith("2")}
    assert len(successes) == 1, f"{call.method} {template}: expected one success status, got {list(successes)}"
    (answer,) = successes.values()
    ref = answer["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[-1] == call.answer.__name__, f"{call.method} {template} answers {ref}"
    declared = {p["name"].lower(): p for p in operation.get("parameters", [])}
    for param in call.params:
        assert declared.get(param, {}).get("in") == "query", f"{call.method} {template}: no query parameter {param}"
    for header in call.headers:
        assert declared.get(header.lower(), {}).get("in") == "header", f"{call.method} {template}: no header {header}"


@pytest.mark.parametrize("name", [n for n, c in CALLS.items() if c.body is not None])
def test_each_body_the_client_sends_has_only_fields_the_document_declares(document, name):
    call = CALLS[name]
    _, operation = operation_of(document, call)
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    # The create's body is one schema per task kind (oneOf, discriminated by kind): each must
    # take the fields the client sends, whatever kind a caller names. An optional body is
    # anyOf the schema and null.
    variants = [schema(document, v["$ref"]) for v in body_schema.get("oneOf", body_schema.get("anyOf", [body_schema]))
                if "$ref" in v]
    assert variants, f"{call.method} {call.path}: no body schema"
    for variant in variants:
        unknown = set(call.body) - set(variant["properties"])
        assert not unknown, f"{call.method} {call.path}: {variant['title']} has no field(s) {sorted(unknown)}"


def test_each_task_of_a_batch_has_only_fields_the_document_declares(document):
    call = CALLS["create_tasks"]
    _, operation = operation_of(document, call)
    items = schema(document, operation["requestBody"]["content"]["application/json"]["schema"]["$ref"])[
        "properties"]["tasks"]["items"]["oneOf"]
    for variant in (schema(document, v["$ref"]) for v in items):
        for task in call.body["tasks"]:
            unknown = set(task) - set(variant["properties"])
            assert not unknown, f"{variant['title']} has no field(s) {sorted(unknown)}"
    assert all(task["idempotency_key"] for task in call.body["tasks"]), "each task carries a key: resends are safe"
    assert call.idempotent
