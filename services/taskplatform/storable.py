"""What PostgreSQL can store of what a client sends. Python's JSON parser accepts NaN, Infinity
and lone surrogate escapes; jsonb refuses them, and text and jsonb refuse the NUL character — so
they are refused up front as the client's mistake, not met later as a database error (a 500)."""

from __future__ import annotations

import math
from typing import Any


def unstorable_json(value: Any, where: str = "payload") -> str | None:
    """Why ``value`` (parsed JSON) cannot be stored as PostgreSQL jsonb, or None. Iterative: the
    nesting depth is the client's choice."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{path}: NaN and Infinity are not JSON numbers"
        elif isinstance(item, str):
            if problem := unstorable_text(item):
                return f"{path}: {problem}"
        elif isinstance(item, dict):
            for key, child in item.items():
                if problem := unstorable_text(key):
                    return f"{path}: a key {problem}"
                stack.append((child, f"{path}.{ascii(key)[1:-1][:40]}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def unstorable_text(text: str) -> str | None:
    """Why ``text`` cannot be a PostgreSQL text value, or None."""
    if "\x00" in text:
        return "contains the NUL character (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (\\ud800-\\udfff without its pair)"
    return None
