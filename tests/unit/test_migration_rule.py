"""Expand/contract (shipyard/components/taskplatform/migrations.py): a release's migrations must
keep the live version working."""

import json

from shipyard.components.taskplatform.migrations import refusal


def info(*chain: str, destructive: dict | None = None) -> str:
    return json.dumps({"chain": list(chain), "destructive": destructive or {}})


DROP = {"0004": {"removes": "drops tasks.legacy", "unused_since": "0003"}}


def test_adding_is_always_allowed():
    assert refusal(info("0001", "0002", "0003"), info("0001", "0002"), "1.0") is None


def test_a_destructive_migration_waits_for_a_live_version_that_no_longer_needs_it():
    # Shipped together with the code change (live still at 0002): refused, naming what to do.
    why = refusal(info("0001", "0002", "0003", "0004", destructive=DROP), info("0001", "0002"), "1.0")
    assert "migration 0004 drops tasks.legacy, which the live version 1.0 still needs" in why
    assert "release a version with 0003 and without 0004 first" in why
    # One release later (live carries 0003): allowed.
    assert refusal(info("0001", "0002", "0003", "0004", destructive=DROP), info("0001", "0002", "0003"), "1.1") is None
    # Already applied by the live version: nothing new.
    assert refusal(info("0001", "0004", destructive=DROP), info("0001", "0004", destructive=DROP), "1.2") is None


def test_a_destructive_migration_must_say_since_when_it_is_unused():
    why = refusal(info("0001", "0002", destructive={"0002": {"removes": "drops x", "unused_since": None}}),
                  info("0001"), "1.0")
    assert "names no unused_since" in why


def test_a_new_version_must_carry_the_live_versions_migrations():
    assert "lacks migration(s) 0003" in refusal(info("0001", "0002"), info("0001", "0002", "0003"), "2.0")


def test_a_live_version_that_cannot_say_knows_nothing():
    # Before `taskplatform migrations` existed: a destructive migration is refused, adding is not.
    assert refusal(info("0001", "0002"), None, "0.1.0") is None
    assert refusal(info("0001", "0004", destructive=DROP), "usage: taskplatform ...", "0.1.0") is not None
