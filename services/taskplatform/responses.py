"""What the API answers, as models for the OpenAPI only: the handlers return the store's dicts
(``store.task_json``, ``api_keys.key_json``) as they are, unvalidated, so that no answer pays
for a second serialisation. The models say what those dicts hold, so clients (the Python client's
models, ``clients/python``) can be checked against the document, and schemathesis checks every
answer against them (``tests/test_api_openapi.py``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field

TaskStatus = Literal["scheduled", "queued", "running", "retry_wait", "succeeded", "dead", "cancelled"]


class Task(BaseModel):
    """A task as stored (``tasks`` table; the idempotency key and lease are not shown)."""

    id: str = Field(description="the task's UUID")
    tenant: str
    kind: str
    payload: dict[str, Any]
    status: TaskStatus
    attempts: int = Field(description="attempts started so far (a re-drive starts again from 0)")
    max_attempts: int
    result: Any = Field(description="what the kind returned, once succeeded (any JSON; null before)")
    error: str | None = Field(description="the last attempt's error")
    created_at: AwareDatetime
    updated_at: AwareDatetime
    run_after: AwareDatetime | None = Field(description="a scheduled task's time, a retry_wait task's next try")
    priority: int = Field(5, ge=0, le=9, description="0-9, higher first within the kind's queue (absent from a "
                                                     "release before priorities: 5)")


class TaskPage(BaseModel):
    items: list[Task] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last one")


class ApiKey(BaseModel):
    """An API key as listed: never its secret."""

    id: str = Field(description="16 hex digits, the `<id>` of `sy_<id>_<secret>`")
    name: str
    scopes: list[str]
    created_by: str = Field(description="the credential that created it (`jwt` or `api_key:<id>`)")
    created_at: AwareDatetime
    expires_at: AwareDatetime | None
    revoked_at: AwareDatetime | None


class CreatedApiKey(ApiKey):
    key: str = Field(description="the key, `sy_<id>_<secret>`: shown in this answer only")


class ApiKeyList(BaseModel):
    items: list[ApiKey]


def answer(model: type[BaseModel], status: int, description: str) -> dict[int, dict]:
    """An OpenAPI ``responses`` entry for a route's success."""
    return {status: {"model": model, "description": description}}
