"""The platform's demo task kinds (`checksum`, `sleep`, `fail`): a package of kinds like any
team's, declared with ``taskplatform.kinds.kind`` and loaded the same way: TASKS_KINDS_PACKAGES names it
by default (a deploy that wants only its own kinds sets it to its packages, or to nothing when
they come by entry point). The tests, the benchmarks and the e2e checks use them."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from taskplatform.kinds import TaskContext, TaskFailed, canonical_json, kind


def _whole_number(value: Any) -> Any:
    """JSON has one number type: 50.0 is the integer 50 (as JSON Schema says)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Strict: a payload is JSON, and its types are those of the API's OpenAPI (no "5" for 5, no 0 for false).
class SleepPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    seconds: float = Field(ge=0, le=30)


class FailPayload(BaseModel):
    # The rule of ``_one`` in JSON Schema too, so the API's OpenAPI promises no payload it refuses.
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"anyOf": [
        {"required": ["times"], "properties": {"times": {"type": "integer"}}},
        {"required": ["always"], "properties": {"always": {"const": True}}}]})
    times: Annotated[int, Field(ge=0, le=100), BeforeValidator(_whole_number)] | None = None
    always: bool = False

    @model_validator(mode="after")
    def _one(self):
        if self.times is None and not self.always:
            raise ValueError("give 'times' (fail that many attempts) or 'always': true")
        return self


@kind("checksum", payload=None)
async def checksum(payload: dict) -> dict:
    """Any JSON object: its SHA-256, canonical JSON."""
    return {"sha256": hashlib.sha256(canonical_json(payload)).hexdigest()}


@kind("sleep", payload=SleepPayload)
async def sleep(payload: SleepPayload) -> dict:
    await asyncio.sleep(payload.seconds)
    return {"slept": payload.seconds}


@kind("fail", payload=FailPayload)
async def fail(payload: FailPayload, context: TaskContext) -> dict:
    if payload.always or context.attempt <= (payload.times or 0):
        raise TaskFailed(f"failing on purpose (attempt {context.attempt})")
    return {"attempt": context.attempt}
