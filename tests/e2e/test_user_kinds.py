"""A team's package of task kinds from outside services/, on the rolled-out environment, through
the edge: `examples/kinds/acme_shop` (found by its entry point alone) is built into the task
platform's image because the inventory names it (SHIPYARD.app.kinds_packages); its kinds run,
their payloads are validated, and the OpenAPI the edge serves publishes their payload schemas."""

from __future__ import annotations

import time

import pytest
import requests

from shipyard.inventory import load_environment
from tests.drill_traffic import api_client

from .conftest import REPO

PACKAGE = "examples/kinds/acme_shop"
TENANT = "acme-shop"


@pytest.fixture(scope="module")
def settings(env_name):
    settings = load_environment(REPO, env_name)
    if not any(p.path == PACKAGE for p in settings.app.kinds_packages):
        pytest.skip(f"environment {env_name} does not build {PACKAGE} into its image (app.kinds_packages)")
    return settings


@pytest.fixture(scope="module")
def client(settings):
    return api_client(settings, tenant=TENANT)


def _finished(client, task_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        task = client.get(f"{client.base}/v1/tasks/{task_id}", timeout=10).json()
        if task["status"] in ("succeeded", "dead", "cancelled"):
            return task
        assert time.monotonic() < deadline, f"task {task_id} still {task['status']} after {timeout_s} s: {task}"
        time.sleep(0.3)


def test_the_teams_kinds_run_through_the_edge(client):
    quote = client.post(f"{client.base}/v1/tasks", json={"kind": "acme-quote", "payload": {
        "customer": "e2e", "discount_percent": 10,
        "lines": [{"sku": "BOLT-M6", "quantity": 40, "unit_cents": 25}, {"sku": "NUT-M6", "quantity": 40,
                                                                           "unit_cents": 10}]}}, timeout=10)
    slug = client.post(f"{client.base}/v1/tasks", json={"kind": "acme-slug", "payload": {"text": "Ünïcode Tëst, 2026!"}},
                       timeout=10)
    assert quote.status_code == 202, quote.text
    assert slug.status_code == 202, slug.text
    done = _finished(client, quote.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["result"] == {"customer": "e2e", "subtotal_cents": 1400, "total_cents": 1260, "attempt": 1}
    done = _finished(client, slug.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["result"] == {"slug": "unicode-test-2026"}


@pytest.mark.parametrize("payload, field", [
    ({"customer": "e2e", "lines": []}, "payload.lines"),  # min_length=1
    ({"customer": "e2e", "lines": [{"sku": "X", "quantity": 0, "unit_cents": 1}]}, "payload.lines.0.quantity"),
    ({"lines": [{"sku": "X", "quantity": 1, "unit_cents": 1}]}, "payload.customer"),
], ids=["no-lines", "zero-quantity", "no-customer"])
def test_the_api_validates_the_teams_payload_model(client, payload, field):
    answer = client.post(f"{client.base}/v1/tasks", json={"kind": "acme-quote", "payload": payload}, timeout=10)
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["message"], answer.json()


def test_the_openapi_through_the_edge_publishes_the_teams_kinds(client):
    doc = requests.get(f"{client.base}/openapi.json", timeout=10).json()
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    mapping = body["discriminator"]["mapping"]
    # The team's kinds beside the platform's demo kinds, each with its own create body.
    assert {"acme-quote", "acme-slug", "checksum", "sleep", "fail", "smoke"} <= set(mapping), sorted(mapping)
    create = schemas[mapping["acme-quote"].rsplit("/", 1)[-1]]
    payload = create["properties"]["payload"]
    assert payload["title"] == "Quote" and set(payload["required"]) == {"customer", "lines"}, payload
    assert payload["properties"]["discount_percent"]["maximum"] == 100
    # The nested model is a component of its own, with its bounds.
    line = schemas["QuoteLine"]
    assert set(line["required"]) == {"sku", "quantity", "unit_cents"} and line["properties"]["quantity"]["minimum"] == 1
    assert "payload" in create["required"]  # a kind whose model requires fields requires the payload
    title = schemas[mapping["acme-slug"].rsplit("/", 1)[-1]]["properties"]["payload"]
    assert title["title"] == "Title" and title["required"] == ["text"], title
