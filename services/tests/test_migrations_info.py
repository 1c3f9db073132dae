"""`taskplatform migrations`: what a release compares with the live version (no database)."""

import json
import os
from pathlib import Path

from taskplatform import cli

VERSIONS = Path(cli.__file__).with_name("migrations") / "versions"


def test_it_lists_every_migration_oldest_first_and_the_destructive_ones(capsys, monkeypatch):
    for name in [k for k in os.environ if k.startswith("TASKS_")]:
        monkeypatch.delenv(name)  # it runs in an image with no environment at all
    assert cli.main(["migrations"]) == 0
    out = json.loads(capsys.readouterr().out)
    files = sorted(p.name.split("_", 1)[0] for p in VERSIONS.glob("[0-9]*.py"))
    assert out["chain"] == files
    # Every destructive one says what it removes and since when nothing needs it (docs/releases.md).
    assert all(mark["removes"] and mark["unused_since"] for mark in out["destructive"].values())
