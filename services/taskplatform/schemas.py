"""What the task API accepts, as models and JSON Schema: a create request's body per task kind
(``TaskCreate``), and the schemas of what PostgreSQL can store, which the OpenAPI's components
hold (``STORABLE_SCHEMAS``, added by ``create_app``), so that the OpenAPI promises no more than
the API accepts."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, create_model

from taskplatform import kinds
from taskplatform.storable import unstorable_json

def _valid_payload(kind: str):
    """A kind's payload: kept as the client sent it (stored as is), checked against the kind's
    model and against what PostgreSQL can store; its OpenAPI schema is the kind's model, so a
    request valid by the OpenAPI is accepted."""
    model = kinds.PAYLOADS[kind]

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

    schema = model.model_json_schema() if model is not None else {
        "type": "object", "propertyNames": {"$ref": f"{COMPONENTS}StorableText"},
        "additionalProperties": {"$ref": f"{COMPONENTS}StorableJson"}}
    return Annotated[dict[str, Any], AfterValidator(check), WithJsonSchema(schema)]


def _create_body(kind: str) -> type[BaseModel]:
    payload = _valid_payload(kind)
    return create_model(f"Create{kind.capitalize()}Task", __config__=ConfigDict(extra="forbid"),
                        kind=(Literal[kind], ...), payload=(payload, Field(default_factory=dict)))


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

TaskCreate = Annotated[Union[tuple(_create_body(kind) for kind in kinds.PAYLOADS)], Field(discriminator="kind")]
