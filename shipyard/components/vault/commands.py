"""Vault's operator commands: `make vault-init ENV=..` (setup.py, under the deploy lock; `make up`
runs the same within every rollout: Component.live_setup), `make vault-status ENV=..` (each server's seal state and
raft role) and `make secrets-migrate ENV=.. TO=vault` (setup.migrate)."""

from __future__ import annotations

from shipyard.component import Command, CommandContext, Option


def live_setup(ctx: CommandContext) -> list[str]:
    """What `make up` does within the rollout (Component.live_setup), and `make vault-init` alone: setup.run."""
    from shipyard.components.vault import setup  # hvac: loaded when it runs
    from shipyard.secretstore import SECRET_NAMES

    return setup.run(ctx.settings, ctx.repo, {name: ctx.secret(name) for name in SECRET_NAMES})


def ahead(settings) -> None:
    """Before the live setup's turn (LiveSetup.ahead): its clients imported."""
    from shipyard.components.vault import setup  # noqa: F401


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


def _migrate(ctx: CommandContext) -> int:
    from shipyard.components.vault import setup  # hvac: loaded when the command runs
    from shipyard.errors import ShipyardError
    from shipyard.secretstore import SECRET_NAMES

    to = ctx.options.get("to")
    if to != "vault":
        raise ShipyardError("TO", f"{to!r}: secrets migrate to Vault only (TO=vault)",
                            "to go back to the files, set secrets.backend 'age' in the inventory and deploy: "
                            "the age store under secrets/ENV/ is always the deploy's own copy")
    if not ctx.settings.vault.enabled:
        raise ShipyardError(f"inventories/{ctx.settings.name}.py: vault.enabled", "false: no Vault server runs to migrate to",
                            "set vault.enabled true and make up first")
    with ctx.lock():
        for line in setup.migrate(ctx.settings, ctx.repo, {name: ctx.secret(name) for name in SECRET_NAMES}):
            print(line)
    return 0


COMMANDS = (
    Command("vault-init", "Vault: make or read the CA, initialise (keys age-encrypted in secrets/ENV/), unseal every "
            "server, bootstrap policies, AppRoles and the database engine, copy each service's secrets", _init,
            changes=True),
    Command("vault-status", "Vault: each server's seal state and raft role (exit 1 when one is sealed or "
            "unreachable)", _status),
    Command("secrets-migrate", "Vault: copy every secret the API and workers read into Vault and read each back as "
            "the service itself; then say how to switch the environment's secrets.backend", _migrate,
            (Option("to", "the backend to migrate to: vault", required=True, example="vault"),), changes=True),
)
