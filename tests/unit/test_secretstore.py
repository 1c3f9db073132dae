import pytest

from shipyard import secretstore
from shipyard.secretstore import SECRET_NAMES
from shipyard.errors import SecretsError
from shipyard.secretstore import load_or_create


@pytest.fixture(autouse=True)
def issuers(monkeypatch):
    """The store's issued secrets (Vault's TLS bundle) by a stand-in issuer: these throw-away
    repos have no inventory to issue a certificate for (tests/unit/test_vault.py issues real ones)."""
    calls = []

    def issuer(name):
        def issue(repo, env, environ):
            calls.append((repo, env, name))
            return f"issued for {env} #{sum(1 for c in calls if c[2] == name)} " + "x" * 32
        return issue

    monkeypatch.setattr(secretstore, "_ISSUERS", {name: issuer(name) for name in secretstore._ISSUERS})
    return calls


def test_issued_secrets_come_from_their_issuer_when_missing_or_rotated(tmp_path, issuers):
    env = {"SHIPYARD_AGE_IDENTITY_DIR": str(tmp_path / "ids")}
    name = next(iter(secretstore._ISSUERS))
    assert load_or_create(tmp_path, "t", env)[name].value.startswith("issued for t #1 ")
    assert load_or_create(tmp_path, "t", env)[name].value.startswith("issued for t #1 ")  # kept, not issued again
    secretstore.rotate(tmp_path, "t", name, env)
    assert load_or_create(tmp_path, "t", env)[name].value.startswith("issued for t #2 ")


def test_generates_encrypts_and_reads_back(tmp_path):
    env = {"SHIPYARD_AGE_IDENTITY_DIR": str(tmp_path / "ids")}
    first = load_or_create(tmp_path, "t", env)
    assert set(first) == set(SECRET_NAMES)
    for name, secret in first.items():
        blob = (tmp_path / "secrets" / "t" / f"{name}.age").read_bytes()
        assert blob.startswith(b"age-encryption.org/v1") and secret.value.encode() not in blob
        assert len(secret.value) >= 32
    assert load_or_create(tmp_path, "t", env) == first  # stable across runs
    assert (tmp_path / "ids" / "t.key").stat().st_mode & 0o777 == 0o600


def test_secret_never_prints_its_value(tmp_path):
    secret = load_or_create(tmp_path, "t", {"SHIPYARD_AGE_IDENTITY_DIR": str(tmp_path / "ids")})["jwt_signing_key"]
    assert secret.value not in repr(secret) and secret.value not in f"{secret}"


def test_missing_identity_is_a_clear_error(tmp_path):
    load_or_create(tmp_path, "t", {"SHIPYARD_AGE_IDENTITY_DIR": str(tmp_path / "ids")})
    with pytest.raises(SecretsError) as err:
        load_or_create(tmp_path, "t", {"SHIPYARD_AGE_IDENTITY_DIR": str(tmp_path / "elsewhere")})
    assert "no age identity" in err.value.what and "elsewhere/t.key" in err.value.where


def test_wrong_identity_cannot_decrypt(tmp_path):
    load_or_create(tmp_path, "t", {"SHIPYARD_AGE_IDENTITY_DIR": str(tmp_path / "ids")})
    other = tmp_path / "other"
    load_or_create(other, "t", {"SHIPYARD_AGE_IDENTITY_DIR": str(other / "ids")})
    (other / "ids" / "t.key").replace(tmp_path / "ids" / "t.key")
    with pytest.raises(SecretsError, match="cannot be decrypted"):
        load_or_create(tmp_path, "t", {"SHIPYARD_AGE_IDENTITY_DIR": str(tmp_path / "ids")})


def test_a_real_environment_never_invents_a_missing_secret(tmp_path):
    env = {"SHIPYARD_AGE_IDENTITY_DIR": str(tmp_path / "ids")}
    created: list[str] = []
    first = load_or_create(tmp_path, "t", env, created=created)
    assert sorted(created) == sorted(SECRET_NAMES)
    (tmp_path / "secrets" / "t" / "redis_password.age").unlink()
    with pytest.raises(SecretsError) as err:
        load_or_create(tmp_path, "t", env, generate_missing=False)
    assert "missing redis_password" in err.value.what and "make secrets-init ENV=t" in err.value.fix
    assert not (tmp_path / "secrets" / "t" / "redis_password.age").exists()  # nothing written
    # `make secrets-init` creates only what is missing; the others keep their values.
    created.clear()
    again = load_or_create(tmp_path, "t", env, generate_missing=True, created=created)
    assert created == ["redis_password"]
    assert {k: v for k, v in again.items() if k != "redis_password"} == \
        {k: v for k, v in first.items() if k != "redis_password"}


def test_only_per_machine_environments_generate_secrets(repo):
    from shipyard.inventory import load_environment

    assert load_environment(repo, "local", {}).secrets.generate_missing
    assert load_environment(repo, "ci", {}).secrets.generate_missing
    assert not load_environment(repo, "production", {}).secrets.generate_missing


def test_fingerprints_tell_other_secrets_apart_without_revealing_them():
    from shipyard.secretstore import Secret, differing, fingerprints, fingerprints_text, parse_fingerprints

    mine = {"a": Secret("a", "x" * 43), "b": Secret("b", "y" * 43)}
    recorded = parse_fingerprints(fingerprints_text(mine).decode())
    assert recorded == fingerprints(mine) and differing(recorded, mine) == []
    assert "x" * 43 not in fingerprints_text(mine).decode()
    other = {"a": Secret("a", "z" * 43), "b": mine["b"], "c": Secret("c", "new" * 15)}
    assert differing(recorded, other) == ["a"]  # a secret the host never had is not a conflict
    assert differing({}, other) == []  # first deploy


def test_rotation_keeps_the_replaced_value_until_applied_and_refuses_a_second_one(tmp_path):
    from shipyard.secretstore import differing, finish_rotations, fingerprints, previous_values, rotate

    env = {"SHIPYARD_AGE_IDENTITY_DIR": str(tmp_path / "ids")}
    before = load_or_create(tmp_path, "t", env)
    assert previous_values(tmp_path, "t", env) == {}
    rotate(tmp_path, "t", "redis_password", env)
    after = load_or_create(tmp_path, "t", env, generate_missing=False)
    assert after["redis_password"] != before["redis_password"]
    assert {k: v for k, v in after.items() if k != "redis_password"} == \
        {k: v for k, v in before.items() if k != "redis_password"}
    assert previous_values(tmp_path, "t", env) == {"redis_password": before["redis_password"]}
    # A host still on the replaced value is this checkout's pending rotation, not a conflict;
    # a host on any other value is another checkout's.
    host_before = fingerprints(before)
    assert differing(host_before, after, previous_values(tmp_path, "t", env)) == []
    assert differing(host_before, after) == ["redis_password"]
    with pytest.raises(SecretsError) as err:
        rotate(tmp_path, "t", "redis_password", env)
    assert "pending" in err.value.what and "make up ENV=t" in err.value.fix
    finish_rotations(tmp_path, "t", ["redis_password"])
    assert previous_values(tmp_path, "t", env) == {}
    assert differing(host_before, after, {}) == ["redis_password"]


def test_rotating_an_unknown_or_missing_secret_says_which_exist(tmp_path):
    from shipyard.secretstore import rotate

    env = {"SHIPYARD_AGE_IDENTITY_DIR": str(tmp_path / "ids")}
    load_or_create(tmp_path, "t", env)
    with pytest.raises(SecretsError) as err:
        rotate(tmp_path, "t", "redis_pasword", env)
    assert "redis_password" in err.value.fix
    (tmp_path / "secrets" / "t" / "jwt_signing_key.age").unlink()
    with pytest.raises(SecretsError, match="nothing to rotate"):
        rotate(tmp_path, "t", "jwt_signing_key", env)
