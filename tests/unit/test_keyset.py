"""The next JWT key set (shipyard/components/taskplatform/keyset.py), read by the services' own
parser: a rotation adds a signing key and keeps the ones whose tokens may still be valid."""

import json

import jwt
from taskplatform.auth import KeySet, legacy_kid

from shipyard.components.taskplatform import keyset

DAY = 86400


def test_a_plain_key_becomes_a_set_whose_old_key_still_verifies_its_tokens():
    old = KeySet.parse("p" * 43)
    token = old.issue("acme", "iss", "aud", 60)
    new = KeySet.parse(keyset.next_key_set("p" * 43, 1_800_000_000))
    assert new.signing_kid != old.signing_kid and list(new.keys)[1] == legacy_kid("p" * 43) == keyset.legacy_kid("p" * 43)
    kid = jwt.get_unverified_header(token)["kid"]
    assert jwt.decode(token, new.key_for(kid), algorithms=["HS256"], audience="aud")["sub"] == "acme"
    fresh = new.issue("acme", "iss", "aud", 60)
    assert jwt.get_unverified_header(fresh)["kid"] == new.signing_kid and new.keys[new.signing_kid] != "p" * 43


def test_keys_retired_longer_than_the_longest_token_go_at_the_next_rotation():
    first = keyset.next_key_set("p" * 43, 0)
    second = keyset.next_key_set(first, 10 * DAY)
    assert len(json.loads(second)["keys"]) == 3  # the new one, the previous, and the plain key retired at 0
    third = keyset.next_key_set(second, 31 * DAY)
    kids = [k["kid"] for k in json.loads(third)["keys"]]
    assert len(kids) == 3 and legacy_kid("p" * 43) not in kids  # retired at 0: more than 30 days ago
    assert kids[1:] == [k["kid"] for k in json.loads(second)["keys"][:2]]


def test_every_rotation_draws_a_new_key():
    assert json.loads(keyset.next_key_set("p" * 43, 0))["keys"][0]["k"] != json.loads(
        keyset.next_key_set("p" * 43, 0))["keys"][0]["k"]
