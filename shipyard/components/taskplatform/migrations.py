"""Expand/contract: whether a release may run its migrations while the live version serves.
Pure; the release runs ``taskplatform migrations`` in the new image and in the live colour and
hands both outputs here (shipyard.component.ReleaseCheck).

The rule (docs/releases.md, "Migrations: the expand/contract rule"): both versions run against one schema during a
release and its watch window, and the previous version stays warm for a rollback, so a release's
migrations must keep the live version working. Adding is always allowed. A migration that
removes or changes what code reads (a dropped or renamed column, a new constraint old code
breaks) is marked ``destructive = "<what it removes>"`` with ``unused_since = "<revision>"``: the
first revision whose code no longer needs it. It ships only in a release whose *live* version
already carries that revision, i.e. one release after the code stopped using it. And a new
version must carry every migration the live one has (it is built on top of it).
"""

from __future__ import annotations

import json


def refusal(new_output: str, live_output: str | None, live_version: str) -> str | None:
    """Why the new version's migrations may not run now (None: they may)."""
    new = json.loads(new_output)
    try:
        live = json.loads(live_output) if live_output else None
    except ValueError:
        live = None  # a live version from before `taskplatform migrations`: it knows no marks
    live_chain = set(live["chain"]) if live else set()
    missing = [r for r in (live["chain"] if live else []) if r not in new["chain"]]
    if missing:
        return (f"the new version lacks migration(s) {', '.join(missing)} that the live version {live_version} "
                f"has: a release is built on top of the live version (merge its migrations)")
    problems = []
    for revision in new["chain"]:
        mark = new["destructive"].get(revision)
        if revision in live_chain or not mark:
            continue
        unused_since = mark.get("unused_since")
        if not unused_since:
            problems.append(f"migration {revision} is destructive ({mark['removes']}) but names no unused_since: "
                            f"say from which revision on the code no longer needs it")
        elif unused_since not in live_chain:
            problems.append(f"migration {revision} {mark['removes']}, which the live version {live_version} still "
                            f"needs (its code predates revision {unused_since}): release a version with "
                            f"{unused_since} and without {revision} first, then this one")
    return "; ".join(problems) or None
