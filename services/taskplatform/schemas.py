"""What the task API accepts, as models and JSON Schema: a create request's body per task kind
(``create_body``: one model per loaded kind, a union discriminated by ``kind``), and the schemas
of what PostgreSQL can store, which the OpenAPI's components hold (``STORABLE_SCHEMAS``, added by
``create_app`` with the kinds' own nested models, ``payload_components``), so that the OpenAPI
promises no more than the API accepts."""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema,
                      create_model, model_validator)

from taskplatform import kinds, recurrence, webhooks
from taskplatform.runtime_config import BATCH_MAX_TASKS_BOUND
from taskplatform.storable import unstorable_json, unstorable_text


def _valid_payload(kind: kinds.Kind):
    """A kind's payload: kept as the client sent it (stored as is), checked against the kind's
    model and against what PostgreSQL can store; its OpenAPI schema is the kind's model, so a
    request valid by the OpenAPI is accepted. Checked also when the client leaves it out (as
    ``{}``): a kind whose model requires fields refuses that, naming them."""
    model = kind.payload

    def check(payload: dict[str, Any]) -> dict[str, Any]:
        if problem := unstorable_json(payload):
            raise ValueError(problem)
        if model is not None:
            try:
                model.model_validate(payload)
            except ValidationError as exc:
                raise ValueError("; ".join(f"payload.{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
                                           for e in exc.errors())) from None
        return payload

    return Annotated[dict[str, Any], AfterValidator(check), WithJsonSchema(payload_schema(kind))]


NUL_FREE = "^[^\\x00]*$"


def _storable(schema: Any) -> Any:
    """A kind's JSON Schema saying what the platform also refuses in any payload (it cannot be
    stored): every string without NUL, every free-form object's keys too. A kind's model rarely
    says so itself (a team's kinds do not know the store), and the OpenAPI must not promise more
    than is accepted. A string that has a pattern of its own keeps it (both must hold)."""
    if isinstance(schema, list):
        return [_storable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _storable(value) for key, value in schema.items()}
    types = out.get("type")
    if types == "string" or (isinstance(types, list) and "string" in types):
        out = {**out, "pattern": NUL_FREE} if "pattern" not in out else {"allOf": [out, {"pattern": NUL_FREE}]}
    if (types == "object" or "additionalProperties" in out) and "propertyNames" not in out:
        out["propertyNames"] = {"$ref": f"{COMPONENTS}StorableText"}
    return out


def payload_schema(kind: kinds.Kind) -> dict:
    """The kind's payload model as JSON Schema (what storable text is, added: ``_storable``),
    its nested models referenced in the OpenAPI's components (``payload_components``)."""
    if kind.payload is None:
        return {"type": "object", "propertyNames": {"$ref": f"{COMPONENTS}StorableText"},
                "additionalProperties": {"$ref": f"{COMPONENTS}StorableJson"}}
    schema = kind.payload.model_json_schema(ref_template=COMPONENTS + "{model}")
    schema.pop("$defs", None)
    return _storable(schema)


def payload_components() -> dict[str, dict]:
    """The nested models of every kind's payload, by name, for the OpenAPI's components. Two
    kinds' different models of one name would make one of them lie: refused at start."""
    found: dict[str, dict] = {}
    for kind in kinds.registry().values():
        if kind.payload is None:
            continue
        for name, schema in kind.payload.model_json_schema(ref_template=COMPONENTS + "{model}").get("$defs", {}).items():
            schema = _storable(schema)
            if found.setdefault(name, schema) != schema:
                raise kinds.KindError(f"task kind {kind.name!r}: its payload's nested model {name!r} differs from "
                                      f"another kind's of the same name; rename one of them")
    return found


def _component_name(kind: str) -> str:
    return "Create" + "".join(part.capitalize() for part in re.split(r"[-_]", kind)) + "Task"


def _instant_text(value: Any) -> Any:
    """An instant is RFC 3339 text, as the OpenAPI says: no Unix timestamp number."""
    if value is not None and not isinstance(value, str):
        raise ValueError("an RFC 3339 date-time string with a time zone offset, e.g. 2026-12-05T09:30:00Z")
    return value


def _json_whole_number(value: Any) -> Any:
    """A JSON integer: ``5`` or ``5.0`` (one number type; JSON Schema's integer), not text, not a
    boolean, not ``5.5``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("a whole number from 0 to 9")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("a whole number from 0 to 9")
        return int(value)
    return value


Priority = Annotated[int, Field(ge=0, le=9, strict=True, description=(
    "0 (lowest) to 9 (highest): within its kind's queue, a task of a higher priority starts first (by band: "
    "7-9 before 4-6 before 0-3, first come within a band; the task keeps the exact value)")),
    BeforeValidator(_json_whole_number)]


def _storable_text(text: str) -> str:
    if problem := unstorable_text(text):
        raise ValueError(problem)
    return text


CallbackUrl = Annotated[str, Field(min_length=1, max_length=webhooks.URL_MAX_LENGTH, pattern="^[^\\x00]*$"),
                        AfterValidator(_storable_text)]
CALLBACK_URL = (
    "where the task's terminal events (`task.succeeded`, `task.dead`, `task.cancelled`) are POSTed too, as a "
    "webhook subscription's (same body and headers, at least once, same `Shipyard-Event-Id` on every attempt), "
    "signed with the tenant's callback secret (`POST /v1/callbacks/secret`; 409 `callback_secret_missing` "
    "without one); http(s) to a host that resolves to public addresses only (unless the environment allows "
    "private ones: 400 `url_not_allowed`), checked again at each delivery; never shown in the task's answers")
IdempotencyKey = Annotated[str, Field(min_length=1, max_length=200, pattern="^[^\\x00]*$"),
                           AfterValidator(_storable_text)]
IDEMPOTENCY_KEY = (
    "this task's own idempotency key: a batch sent again returns the task made under it (`created`: false) "
    "when the request is the same, and is refused (409 `idempotency_key_reused`) when not; the same within "
    "one batch, likewise: the same request is one task (answered twice), another is refused")


def _body_schema(schema: dict, model: type[_Timing]) -> None:
    """Not run_at and delay_seconds together; ``payload`` required where ``{}`` does not fit the
    kind's model (the API still takes it left out, as ``{}``, to say which fields are missing)."""
    schema["not"] = {"required": ["run_at", "delay_seconds"]}
    if model.payload_required:
        schema["required"] = [*schema.get("required", []), "payload"]


class _Timing(BaseModel):
    """A create's body: when the task may run, at once (neither given), at ``run_at``, or
    ``delay_seconds`` from now, its priority and callback (the kind and payload fields are added
    per kind)."""
    model_config = ConfigDict(extra="forbid", json_schema_extra=_body_schema)
    payload_required: ClassVar[bool] = False
    run_at: Annotated[AwareDatetime | None, BeforeValidator(_instant_text), Field(description=(
        "run no earlier than this instant (RFC 3339 with a time zone offset; at most "
        "TASKS_API_MAX_DELAY_SECONDS ahead, 400 beyond; an instant past runs at once); not with delay_seconds"))] = None
    priority: Priority = 5
    callback_url: CallbackUrl | None = Field(None, description=CALLBACK_URL)

    @model_validator(mode="after")
    def _one_of(self):
        if {"run_at", "delay_seconds"} <= self.model_fields_set:  # as the schema's "not" says, null or not
            raise ValueError("give run_at or delay_seconds, not both")
        return self


@functools.cache
def create_body(max_delay_seconds: float):
    """The body of ``POST /v1/tasks``: one model per loaded kind, discriminated by ``kind``."""
    return Annotated[Union[_create_models(max_delay_seconds)], Field(discriminator="kind")]


@functools.cache
def create_batch_body(max_delay_seconds: float) -> type[BaseModel]:
    """The body of ``POST /v1/tasks:batch``: ``tasks``, each a create's body (one model per kind,
    ``Batch<Kind>Task``) with its own ``idempotency_key``."""
    items = tuple(create_model(body.__name__.replace("Create", "Batch", 1), __base__=body,
                               idempotency_key=(IdempotencyKey | None, Field(None, description=IDEMPOTENCY_KEY)))
                  for body in _create_models(max_delay_seconds))
    plain = next((body.model_fields["kind"].annotation.__args__[0] for body in items if not body.payload_required),
                 "smoke")
    example = {"tasks": [{"kind": plain, "idempotency_key": "order-42-a"},
                         {"kind": plain, "priority": 8, "delay_seconds": 60, "idempotency_key": "order-42-b"}]}
    return create_model(
        "CreateTaskBatch", __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [example]}),
        tasks=(list[Annotated[Union[items], Field(discriminator="kind")]], Field(
            min_length=1, max_length=BATCH_MAX_TASKS_BOUND, description=(
                f"the tasks, created all or none: at most the runtime config's `batch_max_tasks` (100 by default; "
                f"400 `batch_too_large` beyond it, whatever this schema's bound of {BATCH_MAX_TASKS_BOUND} says)"))))


@functools.cache
def _create_models(max_delay_seconds: float) -> tuple[type[_Timing], ...]:
    bodies = []
    for kind in kinds.registry().values():
        bodies.append(body := create_model(
            _component_name(kind.name), __base__=_Timing,
            kind=(Literal[kind.name], ...),
            payload=(_valid_payload(kind), Field(default_factory=dict, validate_default=True)),
            delay_seconds=(float | None, Field(None, ge=0, le=max_delay_seconds, strict=True, description=(
                f"run no earlier than this many seconds from now (at most {max_delay_seconds:g}, "
                f"TASKS_API_MAX_DELAY_SECONDS); not with run_at")))))
        body.payload_required = not _fits(kind.payload, {})
    if len({body.__name__ for body in bodies}) < len(bodies):
        raise kinds.KindError(f"two task kinds differ only by '-' and '_' ({kinds.names()}): rename one")
    return tuple(bodies)


def _schedule_body_schema(schema: dict, model: type[_Recurring]) -> None:
    """Exactly one of cron and interval_seconds; timezone with cron only; ``payload`` required
    where ``{}`` does not fit the kind's model."""
    schema["oneOf"] = [{"required": ["cron"], "not": {"required": ["interval_seconds"]}},
                       {"required": ["interval_seconds"], "not": {"anyOf": [{"required": ["cron"]},
                                                                            {"required": ["timezone"]}]}}]
    if model.payload_required:
        schema["required"] = [*schema.get("required", []), "payload"]


def _json_integer(value: Any) -> Any:
    """A JSON number without a fraction (``60`` or ``60.0``, both integers to JSON Schema); not
    text, not a boolean, which pydantic's lax mode would turn into one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("a whole number of seconds, e.g. 60")
    return value


# Whole seconds as JSON Schema's integer says them: 60 or 60.0, never "60" or true.
WholeSeconds = Annotated[int, BeforeValidator(_json_integer)]


class _Recurring(BaseModel):
    """A schedule's body: when its tasks are made (the kind and payload fields are added per kind).
    ``cron``, ``timezone`` and ``interval_seconds`` are left out, never null (None: left out).
    Whether cron can evaluate the expression and the time zone exists, no schema says: the route
    checks them (400)."""
    model_config = ConfigDict(extra="forbid", json_schema_extra=_schedule_body_schema)
    payload_required: ClassVar[bool] = False
    cron: str = Field(None, min_length=1, max_length=200, pattern="^[^\\x00]*$", description=(
        "a cron expression, five fields (minute hour day-of-month month day-of-week: ranges, steps, "
        "lists, names, L, W, #), evaluated in `timezone`; not with interval_seconds"))
    timezone: str = Field(None, min_length=1, max_length=64, pattern="^[^\\x00]*$", description=(
        "the IANA time zone of `cron` (default UTC), e.g. Europe/Paris"))
    interval_seconds: WholeSeconds = Field(None, ge=1, le=31_536_000, description=(
        "every this many seconds from the schedule's creation; not with cron"))
    catchup: recurrence.Catchup = Field("latest", description=(
        "occurrences missed while no worker fired (an outage): `latest` fires the most recent one, `all` "
        f"each, oldest first, at most the {recurrence.CATCHUP_ALL_LIMIT} most recent, `none` only one at most "
        f"{recurrence.ON_TIME_SECONDS:g} s late"))
    priority: Priority = 5  # of each task it makes

    @model_validator(mode="after")
    def _cron_or_interval(self):
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give cron (with an optional timezone) or interval_seconds, exactly one")
        if self.interval_seconds is not None and self.timezone is not None:
            raise ValueError("timezone applies to cron only; leave it out with interval_seconds")
        if self.cron is not None and self.timezone is None:
            self.timezone = "UTC"
        return self


@functools.cache
def create_schedule_body():
    """The body of ``POST /v1/schedules``: one model per loaded kind, discriminated by ``kind``."""
    bodies = []
    for kind in kinds.registry().values():
        bodies.append(body := create_model(
            _component_name(kind.name).removesuffix("Task") + "Schedule", __base__=_Recurring,
            kind=(Literal[kind.name], ...),
            payload=(_valid_payload(kind), Field(default_factory=dict, validate_default=True))))
        body.payload_required = not _fits(kind.payload, {})
    return Annotated[Union[tuple(bodies)], Field(discriminator="kind")]


def _fits(model: type[BaseModel] | None, payload: dict) -> bool:
    try:
        return model is None or bool(model.model_validate(payload))
    except ValidationError:
        return False


def delay_of(body: BaseModel, now: dt.datetime | None = None) -> float | None:
    """Seconds from now until the task may run (None: at once), from ``run_at`` or ``delay_seconds``."""
    if body.delay_seconds is not None:
        return body.delay_seconds or None
    if body.run_at is not None:
        # timestamp() does not build a datetime in UTC, so an instant near year 1 or 9999 with an
        # offset cannot overflow.
        delay = body.run_at.timestamp() - (now or dt.datetime.now(dt.timezone.utc)).timestamp()
        return delay if delay > 0 else None
    return None


# What jsonb stores, as JSON Schema: no NaN (JSON has none), no NUL and no lone surrogate in
# strings and keys (``storable``) — so that the OpenAPI promises no more than the API accepts. Recursive, so
# it lives in the OpenAPI's components (added in ``create_app``).
COMPONENTS = "#/components/schemas/"
STORABLE_SCHEMAS = {
    # Lone surrogates cannot be in the pattern (JSON Schema validators use Unicode scalar values):
    # UTF-8 clients cannot send them anyway, only a JSON \\udXXX escape can.
    "StorableText": {"type": "string", "pattern": "^[^\\x00]*$",
                     "description": "text without the NUL character and without lone surrogate escapes"},
    "StorableJson": {"anyOf": [
        {"type": ["null", "boolean", "number"]}, {"$ref": f"{COMPONENTS}StorableText"},
        {"type": "array", "items": {"$ref": f"{COMPONENTS}StorableJson"}},
        {"type": "object", "propertyNames": {"$ref": f"{COMPONENTS}StorableText"},
         "additionalProperties": {"$ref": f"{COMPONENTS}StorableJson"}}]},
}
