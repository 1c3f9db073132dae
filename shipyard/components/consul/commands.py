"""Consul's operator command: `make consul-members` — the servers as raft knows them (which one
leads, which vote), read through the published HTTP ports with the management token."""

from __future__ import annotations

from shipyard.component import Command, CommandContext


def members_table(servers: list[dict]) -> str:
    """Raft's servers as a table, the leader first."""
    rows = [("node", "address", "role", "voter")]
    for server in sorted(servers, key=lambda s: (not s["Leader"], s["Node"])):
        rows.append((server["Node"], server["Address"], "leader" if server["Leader"] else "follower",
                     "yes" if server["Voter"] else "no"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _members(ctx: CommandContext) -> int:
    from shipyard.components.consul.kv import ConsulKV

    servers = ConsulKV(ctx.settings, ctx.secret("consul_management_token")).raft_servers()
    print(members_table(servers))
    expected = ctx.settings.consul.servers
    if len(servers) != expected or not any(s["Leader"] for s in servers):
        print(f"{ctx.settings.name}: raft has {len(servers)} of {expected} servers"
              f"{'' if any(s['Leader'] for s in servers) else ' and no leader'}")
        return 1
    return 0


COMMANDS = (
    Command("consul-members", "the Consul servers as raft knows them: leader, followers, voters "
            "(exit 1 when one is missing or none leads)", _members),
)
