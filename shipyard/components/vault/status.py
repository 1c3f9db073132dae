"""`make status`: each Vault server's seal state and raft role, as the server itself reports it
(`bao status` inside its container, over its own TLS; no token needed)."""

from __future__ import annotations

import json

from shipyard.components.vault import API_PORT, TLS_FILE


def describe_one(output: bytes, exit_code: int) -> str:
    """``bao status -format=json``'s answer (exit 0 unsealed, 2 sealed, 1 no answer) → a line."""
    try:
        status = json.loads(output or b"{}")
    except ValueError:
        status = {}
    if exit_code == 1 or "sealed" not in status:
        return "no answer from its API"
    if not status.get("initialized"):
        return "not initialised (the next `make up` initialises it)"
    if status["sealed"]:
        return (f"SEALED (unseal progress {status.get('progress', 0)}/{status.get('t', '?')}; "
                f"the next `make up` unseals it)")
    role = "leader" if status.get("is_self") else "standby"
    return f"unsealed, {role}, OpenBao {status.get('version', '?')}"


def describe(settings, containers: dict) -> dict[str, str]:
    out = {}
    for name, container in containers.items():
        if not name.startswith("vault") or container.status != "running":
            continue
        result = container.exec_run(["bao", "status", "-format=json", f"-address=https://127.0.0.1:{API_PORT}",
                                     f"-ca-cert={TLS_FILE}"])
        out[name] = describe_one(result.output, result.exit_code)
    return out
