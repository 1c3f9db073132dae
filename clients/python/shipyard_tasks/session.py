"""What every request of a client carries."""

from __future__ import annotations

VERSION = "0.1.0"  # as pyproject.toml says; the User-Agent tells the API's logs which client sent


def client_headers(credential: str, extra: dict[str, str] | None) -> dict[str, str]:
    if not credential or credential != credential.strip():
        raise ValueError("credential: an API key (sy_...) or a JWT, without surrounding spaces")
    return {"Authorization": f"Bearer {credential}", "Accept": "application/json",
            "User-Agent": f"shipyard-tasks-client/{VERSION}", **(extra or {})}
