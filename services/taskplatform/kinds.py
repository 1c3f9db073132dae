"""Task kinds: the code a worker runs, and the payload each accepts (validated by the API)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


class TaskFailed(Exception):
    pass


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


class SmokePayload(BaseModel):
    """Nothing: a smoke task only says who ran it."""
    model_config = ConfigDict(extra="forbid", strict=True)


PAYLOADS: dict[str, type[BaseModel] | None] = {"checksum": None, "sleep": SleepPayload, "fail": FailPayload,
                                               "smoke": SmokePayload}


def canonical_json(payload: Any) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


async def run(kind: str, payload: dict, attempt: int, runner: dict[str, str]) -> dict:
    """``runner``: the worker running it (``colour``, ``version``, ``worker``)."""
    if kind == "checksum":
        return {"sha256": hashlib.sha256(canonical_json(payload)).hexdigest()}
    if kind == "sleep":
        seconds = float(payload["seconds"])
        await asyncio.sleep(seconds)
        return {"slept": seconds}
    if kind == "fail":
        if payload.get("always") or attempt <= int(payload.get("times") or 0):
            raise TaskFailed(f"failing on purpose (attempt {attempt})")
        return {"attempt": attempt}
    if kind == "smoke":  # the release's smoke test: which colour, version and worker took it
        return dict(runner)
    raise TaskFailed(f"unknown kind {kind!r}")
