"""Vault's operator commands: `make vault-init ENV=..` (setup.py, under the deploy lock) and
`make vault-status ENV=..` (each server's seal state and raft role)."""

from __future__ import annotations

from shipyard.component import Command, CommandContext


def _init(ctx: CommandContext) -> int:
    from shipyard.components.vault import setup  # hvac: loaded when the command runs
    from shipyard.secretstore import SECRET_NAMES

    if not ctx.settings.vault.enabled:
        print(f"{ctx.settings.name}: vault.enabled is false, so no Vault server runs: nothing to do")
        return 0
    with ctx.lock():
        for line in setup.run(ctx.settings, ctx.repo, {name: ctx.secret(name) for name in SECRET_NAMES}):
            print(line)
    return 0


def _status(ctx: CommandContext) -> int:
    from shipyard.components.vault import setup  # hvac: loaded when the command runs

    if not ctx.settings.vault.enabled:
        print(f"{ctx.settings.name}: vault.enabled is false, so no Vault server runs")
        return 0
    lines, healthy = setup.status(ctx.settings, ctx.repo)
    print("\n".join(lines))
    return 0 if healthy else 1


COMMANDS = (
    Command("vault-init", "Vault: make or read the CA, initialise (keys age-encrypted in secrets/ENV/), unseal every "
            "server, bootstrap policies, AppRoles and the database engine, copy each service's secrets", _init),
    Command("vault-status", "Vault: each server's seal state and raft role (exit 1 when one is sealed or "
            "unreachable)", _status),
)
