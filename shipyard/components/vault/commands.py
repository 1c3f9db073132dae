"""Vault's operator commands: `make vault-init ENV=..` (setup.py, under the deploy lock; `make up`
runs the same within every rollout: Component.live_setup) and `make vault-status ENV=..` (each server's seal state and
raft role)."""

from __future__ import annotations

from shipyard.component import Command, CommandContext


def live_setup(ctx: CommandContext) -> list[str]:
    """What `make up` does within the rollout (Component.live_setup), and `make vault-init` alone: setup.run."""
    from shipyard.components.vault import setup  # hvac: loaded when it runs
    from shipyard.secretstore import SECRET_NAMES

    return setup.run(ctx.settings, ctx.repo, {name: ctx.secret(name) for name in SECRET_NAMES})


def hand_off(ctx: CommandContext, instances: tuple[str, ...]) -> dict[str, dict[str, bytes]]:
    """What each service that logs in at run time is handed (Component.live_setup): setup.hand_off."""
    from shipyard.components.vault import setup  # hvac: loaded when it runs

    return setup.hand_off(ctx.settings, ctx.repo, instances)


def preflight(settings, repo) -> list[str]:
    """Before `make up` touches a host (Component.preflight): setup.preflight."""
    if not settings.vault.enabled:
        return []
    from shipyard.components.vault import setup  # hvac: loaded when it runs

    return setup.preflight(settings, repo)


def _init(ctx: CommandContext) -> int:
    if not ctx.settings.vault.enabled:
        print(f"{ctx.settings.name}: vault.enabled is false, so no Vault server runs: nothing to do")
        return 0
    with ctx.lock():
        for line in live_setup(ctx):
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
            "server, bootstrap policies, AppRoles and the database engine, copy each service's secrets", _init,
            changes=True),
    Command("vault-status", "Vault: each server's seal state and raft role (exit 1 when one is sealed or "
            "unreachable)", _status),
)
