"""Acme's shop tasks: two task kinds, each a function with a pydantic payload model, declared
with ``taskplatform.kinds.kind`` (the platform's only API a package of kinds uses).

- ``acme-quote`` (a plain function: it runs in a worker's thread pool): a quote's total from
  its lines, in cents, with a result model;
- ``acme-slug`` (``async def``: in the worker's event loop): a URL slug of a title.

The API validates a create's payload against these models (422 otherwise) and publishes them in
its OpenAPI (``CreateAcmeQuoteTask``, ``Quote``, ``QuoteLine``...).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from taskplatform.kinds import TaskContext, kind


def _whole_number(value: Any) -> Any:
    """JSON has one number type: 50.0 is the integer 50 (as JSON Schema says)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Strict: a payload is JSON, and its types are those the OpenAPI publishes (no "5" for 5, no
# false for 0) — the API accepts exactly what its document allows.
class QuoteLine(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    sku: str = Field(min_length=1, max_length=32, description="the article's stock-keeping unit")
    quantity: Annotated[int, Field(ge=1, le=10_000), BeforeValidator(_whole_number)]
    unit_cents: Annotated[int, Field(ge=0, le=100_000_000, description="price of one, in cents"),
                          BeforeValidator(_whole_number)]


class Quote(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    customer: str = Field(min_length=1, max_length=100)
    lines: list[QuoteLine] = Field(min_length=1, max_length=100)
    discount_percent: Annotated[int, Field(ge=0, le=100), BeforeValidator(_whole_number)] = 0


class QuoteTotal(BaseModel):
    customer: str
    subtotal_cents: int
    total_cents: int
    attempt: int


@kind("acme-quote", payload=Quote, result=QuoteTotal)
def quote(payload: Quote, context: TaskContext) -> QuoteTotal:
    subtotal = sum(line.quantity * line.unit_cents for line in payload.lines)
    total = subtotal * (100 - payload.discount_percent) // 100
    return QuoteTotal(customer=payload.customer, subtotal_cents=subtotal, total_cents=total, attempt=context.attempt)


class Title(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(min_length=1, max_length=500)
    max_length: Annotated[int, Field(ge=8, le=200), BeforeValidator(_whole_number)] = 60


@kind("acme-slug", payload=Title)
async def slug(payload: Title) -> dict:
    ascii_text = unicodedata.normalize("NFKD", payload.text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return {"slug": words[:payload.max_length].rstrip("-")}
