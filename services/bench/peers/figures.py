"""`make bench-peers`'s figures from what the phases returned, and the report: the table, the
ratios (Shipyard / peer) and the issue's goals. Pure: no process, no clock, no I/O."""

from __future__ import annotations

import math

SHIPYARD = "shipyard"
SUBMIT_SLACK = 2.0  # the goal: Shipyard's submit rate within 2x of the fastest peer's (HTTP and auth cost)


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def submit_figures(clients: list[dict]) -> dict:
    """The concurrent clients' replies (``count``, ``errors``, ``started``, ``finished``) as one
    rate: acknowledged submits over the span from the first client's start to the last one's end."""
    span = max(c["finished"] for c in clients) - min(c["started"] for c in clients)
    tasks = sum(c["count"] for c in clients)
    return {"clients": len(clients), "tasks": tasks, "errors": sum(c["errors"] for c in clients),
            "seconds": span, "per_s": tasks / span if span > 0 else None}


def drain_figures(backlog: int, spawned_at: float, drained: dict) -> dict:
    """The backlog's drain, between the first and the last completion as the system stored them
    (the workers' start-up apart: ``startup_s``, from their spawn to the first result)."""
    first, last = drained["first_done"], drained["last_done"]
    span = last - first if first is not None and last is not None else None
    return {"backlog": backlog, "done": drained["done"],
            "per_s": (drained["done"] - 1) / span if span else None,
            "startup_s": first - spawned_at if first is not None else None,
            "wall_s": drained["observed_at"] - spawned_at}


def latency_figures(rate: float, seconds: float, result: dict) -> dict:
    latencies = result["latencies_ms"]
    return {"rate": rate, "seconds": seconds, "sent": result["sent"], "done": len(latencies),
            "failed": result["failed"], "pending": result["pending"],
            "max_schedule_lag_ms": result["max_schedule_lag_ms"],
            **{f"p{round(q * 100)}_ms": percentile(latencies, q) for q in (0.5, 0.95, 0.99)}}


def survival_figures(acknowledged: int, in_hand: int | None, ended: dict, seconds: float | None,
                     bound_s: float) -> dict:
    """Whether every acknowledged task of the phase ended well within ``bound_s`` of the kill -9
    of a worker holding ``in_hand`` of them (None: no worker was seen running one, nothing was
    killed); ``seconds``: from the kill to the last success."""
    killed = in_hand is not None
    return {"acknowledged": acknowledged, "killed_with_task": killed, "in_hand": in_hand or 0, **ended,
            "seconds": seconds, "bound_s": bound_s, "survived": killed and ended["succeeded"] == acknowledged}


def ratio(shipyard: float | None, peer: float | None) -> float | None:
    if shipyard is None or peer is None or peer == 0 or math.isnan(shipyard) or math.isnan(peer):
        return None
    return shipyard / peer


# (label, phase, figure, higher is better, format)
FIGURES = [("submit/s (8 clients)", "submit", "per_s", True, "{:,.0f}"),
           ("drain/s (2 workers)", "drain", "per_s", True, "{:,.0f}"),
           ("latency p50 ms", "latency", "p50_ms", False, "{:.1f}"),
           ("latency p95 ms", "latency", "p95_ms", False, "{:.1f}")]


def _cell(value, fmt: str) -> str:
    return fmt.format(value) if value is not None else "-"


def survival_cell(survival: dict) -> str:
    """yes (and in what time), failed for good, or not ended yet when the bench stopped waiting."""
    if not survival["killed_with_task"]:
        return "not tested"
    if survival["survived"]:
        return f"yes {survival['seconds']:.0f} s"
    if survival["failed"]:
        return f"NO {survival['failed']} failed"
    return f"not in {survival['bound_s']:.0f} s"


def table(results: dict[str, dict]) -> list[str]:
    """One row a figure, one column a system (Shipyard first), and the survival row."""
    names = list(results)
    rows = [(label, [_cell(results[n][phase][figure], fmt) for n in names])
            for label, phase, figure, _higher, fmt in FIGURES]
    rows.append(("kill -9 survived", [survival_cell(results[n]["survival"]) for n in names]))
    width = 2 + max(len(text) for text in [*names, *(cell for _label, cells in rows for cell in cells)])
    return [f"  {'':24}" + "".join(f"{name:>{width}}" for name in names),
            *(f"  {label:24}" + "".join(f"{cell:>{width}}" for cell in cells) for label, cells in rows)]


def _num(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else "-"


def detail_lines(name: str, result: dict) -> list[str]:
    """What stands behind a system's figures: counts, errors, start-up, the tail, the kill."""
    s, d, lat, surv = result["submit"], result["drain"], result["latency"], result["survival"]
    lines = [f"  {name}: submit {s['tasks']} in {s['seconds']:.2f} s ({s['errors']} errors); drain {d['done']}/"
             f"{d['backlog']}, workers' start-up {_num(d['startup_s'], '.1f')} s, spawn to all done "
             f"{d['wall_s']:.1f} s; latency {lat['done']}/{lat['sent']} done (failed {lat['failed']}, pending "
             f"{lat['pending']}), p99 {_num(lat['p99_ms'], '.1f')} ms, enqueues at worst "
             f"{lat['max_schedule_lag_ms']:.1f} ms late"]
    if not surv["killed_with_task"]:
        ending = "no worker was seen running one of them: nothing killed"
    elif surv["pending"]:
        ending = f"{surv['pending']} not ended {surv['bound_s']:.0f} s after the kill"
    else:
        ending = f"the last ended {_num(surv['seconds'], '.1f')} s after the kill"
    lines.append(f"    kill -9: {surv['acknowledged']} acknowledged, the killed worker held {surv['in_hand']}; "
                 f"succeeded {surv['succeeded']}, failed {surv['failed']}, ran twice or more {surv['ran_again']}; "
                 + ending)
    return lines


def ratio_lines(results: dict[str, dict]) -> list[str]:
    """Shipyard / peer for each figure: above 1 is Shipyard ahead for rates, behind for latencies."""
    lines = []
    for label, phase, figure, higher, _fmt in FIGURES:
        ours = results[SHIPYARD][phase][figure]
        cells = []
        for peer in (n for n in results if n != SHIPYARD):
            r = ratio(ours, results[peer][phase][figure])
            cells.append(f"{peer} {r:.2f}" if r is not None else f"{peer} -")
        better = "higher" if higher else "lower"
        lines.append(f"  {label:24} Shipyard/peer: {', '.join(cells)}  ({better} is better for Shipyard)")
    return lines


def goals(results: dict[str, dict]) -> list[tuple[str, bool]]:
    """The issue's goals, each with whether this run met it."""
    ours = results[SHIPYARD]
    peers = [results[n] for n in results if n != SHIPYARD]

    def at_least(phase: str, figure: str) -> bool:
        mine = ours[phase][figure]
        return mine is not None and all(p[phase][figure] is None or mine >= p[phase][figure] for p in peers)

    def at_most(phase: str, figure: str) -> bool:
        mine = ours[phase][figure]
        return mine is not None and all(p[phase][figure] is None or mine <= p[phase][figure] for p in peers)

    fastest_submit = max((p["submit"]["per_s"] or 0 for p in peers), default=0)
    drain, survival = ours["drain"], ours["survival"]
    return [
        ("Shipyard's drain rate at or ahead of every peer's", at_least("drain", "per_s")),
        ("Shipyard's latency p50 and p95 at or below every peer's", at_most("latency", "p50_ms")
         and at_most("latency", "p95_ms")),
        (f"durable rows: every acknowledged create ({ours['submit']['tasks']}) is a row that ended succeeded",
         drain["done"] == ours["submit"]["tasks"] and ours["submit"]["errors"] == 0),
        ("every acknowledged task ends after a worker's kill -9", survival["survived"]),
        (f"Shipyard's submit rate within {SUBMIT_SLACK:.0f}x of the fastest peer's",
         ours["submit"]["per_s"] is not None and ours["submit"]["per_s"] * SUBMIT_SLACK >= fastest_submit),
    ]
