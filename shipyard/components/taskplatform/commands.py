"""The task platform's operator commands: its runtime config in Consul (``runtime.py``) —
`make config-push`, `config-set`, `config-history`, `config-rollback`. Each change is validated by
the platform's own schema, written with check-and-set, and waited for until every API process
and worker reports it. And `make token`: a JWT for a tenant, signed in the live API container
with the key set it verifies with (`taskplatform token`)."""

from __future__ import annotations

import json

from shipyard.component import Command, CommandContext, Option

TOKEN = "consul_management_token"
TIMEOUT = Option("timeout", "seconds to wait until every process runs it", default=30.0, number=True)


def _push(ctx: CommandContext) -> int:
    from shipyard.components.taskplatform import runtime

    print(runtime.push(ctx.settings, ctx.secret(TOKEN), runtime.desired(ctx.settings), "pushed from the repo",
                       ctx.options["timeout"]))
    return 0


def parse_value(value: str):
    """VALUE= as JSON (8, true, "x", [..]) or, when it is not JSON, a bare string."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _set(ctx: CommandContext) -> int:
    from shipyard.components.taskplatform import runtime

    token, key = ctx.secret(TOKEN), ctx.options["key"]
    doc = {**runtime.current_document(ctx.settings, token), key: parse_value(ctx.options["value"])}
    print(runtime.push(ctx.settings, token, doc, f"set {key}", ctx.options["timeout"]))
    return 0


def _history(ctx: CommandContext) -> int:
    from shipyard.components.taskplatform import runtime

    for entry in runtime.history(ctx.settings, ctx.secret(TOKEN)):
        doc = entry["document"]
        print(f"version {doc['version']:>4}  {entry['at']}  {entry['by']}  {entry['note']}")
    return 0


def _rollback(ctx: CommandContext) -> int:
    from shipyard.components.taskplatform import runtime

    token, to = ctx.secret(TOKEN), ctx.options["to"]
    print(runtime.push(ctx.settings, token, runtime.version_from_history(ctx.settings, token, to),
                       f"rollback to version {to}", ctx.options["timeout"]))
    return 0


def token_argv(tenant: str, scopes: str | None, ttl: float | None) -> list[str]:
    """`taskplatform token` as run in the API container; its own defaults where not given."""
    argv = ["taskplatform", "token", "--tenant", tenant]
    if scopes:
        argv += ["--scopes", scopes]
    if ttl is not None:
        argv += ["--ttl", f"{ttl:g}"]
    return argv


def _token(ctx: CommandContext) -> int:
    from shipyard.controller.drills import run_in
    from shipyard.controller.releases import live_instance
    from shipyard.errors import ShipyardError

    service = live_instance(ctx.settings, "api")
    code, out, err = run_in(ctx.settings, service,
                            token_argv(ctx.options["tenant"], ctx.options["scopes"], ctx.options["ttl"]))
    if code != 0:  # its refusal names the option; it never prints the key
        raise ShipyardError(f"environment {ctx.settings.name}, container {service}", err.strip() or f"exit {code}",
                            "correct TENANT, SCOPES or TTL (make token ENV=.. TENANT=acme SCOPES=tasks:read)")
    print(out.strip())  # the token alone, for a pipe
    return 0


COMMANDS = (
    Command("config-push", "write the repo's runtime config (SHIPYARD.runtime) to Consul, show the diff, wait "
            "until every API process and worker runs it", _push, (TIMEOUT,), changes=True),
    Command("config-set", "change one runtime config key in Consul, same path", _set,
            (Option("key", "the key", required=True, example="worker_concurrency"),
             Option("value", "JSON (8, true, \"x\") or a bare string", required=True, example="8"), TIMEOUT),
            changes=True),
    Command("config-history", "the runtime config versions pushed to Consul", _history),
    Command("config-rollback", "push an earlier runtime config version again", _rollback,
            (Option("to", "a version from make config-history", required=True, example="3"), TIMEOUT), changes=True),
    Command("token", "print a JWT for a tenant, signed in the live API container (default: every scope, a day)",
            _token, (Option("tenant", "the tenant (the token's sub)", required=True, example="acme"),
                     Option("scopes", "comma-separated: tasks:read, tasks:write, schedules:write, webhooks:write, "
                                      "admin", example="tasks:read,tasks:write"),
                     Option("ttl", "seconds until it expires (at most 30 days)", number=True, example="3600"))),
)
