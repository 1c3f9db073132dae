"""`make status`: the Sentinels' view — which node they name as the master, whether they
agree — and each node's role from it."""

from __future__ import annotations

from collections import Counter

from shipyard import topology
from shipyard.components.redis import SENTINEL_CONF


def describe(settings, containers: dict) -> dict[str, str]:
    master_name = settings.redis.master_name
    topo = topology.build(settings)
    sentinels = set(topo.instance_names("redis", "redis-sentinel"))
    answers: dict[str, str] = {}
    for name, container in containers.items():
        if name in sentinels and container.status == "running":
            result = container.exec_run(["sh", f"{SENTINEL_CONF}/cli.sh", "sentinel", "get-master-addr-by-name",
                                         master_name])
            lines = (result.output or b"").decode(errors="replace").split()
            answers[name] = ":".join(lines[:2]) if result.exit_code == 0 and len(lines) >= 2 else "no answer"
    votes = Counter(a for a in answers.values() if a != "no answer")
    master, count = votes.most_common(1)[0] if votes else ("", 0)
    out = {}
    # `make status` asks each host on its own: the other hosts' Sentinels are on their lines.
    scope = "Sentinels" if len(answers) == len(sentinels) else "Sentinels on this host"
    for name in answers:
        agree = "agrees" if answers[name] == master else "DISAGREES"
        out[name] = f"names {answers[name]} as master ({agree}; {count} of {len(answers)} {scope})"
    for inst in topo.instances_of("redis"):  # the nodes (their exporters have no role)
        if inst.service.name in ("redis", "redis-replica") and inst.name in containers:
            me = str(topo.announced(inst))
            out[inst.name] = ("master" if me == master else "replica") + f" (as {me}, by the Sentinels)" if master \
                else "role unknown: no Sentinel answers"
    return out
