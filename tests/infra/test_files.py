"""Rendered config on the host is exactly what was rendered; secrets are 0400 files owned by the
reading uid, inside and outside the container, and never in env, compose or config."""

from pathlib import Path

import pytest

from shipyard.secretstore import SECRET_NAMES, load_or_create

REPO = Path(__file__).resolve().parents[2]



def test_rendered_and_static_files_are_shipped_unchanged(target):
    for rel, content in target.rendered.shipped.items():
        f = target.host.file(f"{target.project_dir}/{rel}")
        assert f.is_file, rel
        assert f.mode == 0o644, rel
        assert f.content == content, f"{rel} on the host differs from the render"


def test_the_project_dir_holds_nothing_but_the_render_and_the_secrets_of_its_services(target):
    listed = target.host.check_output(f"cd {target.project_dir} && find . -type f ! -path './secrets/*'")
    # .env: per service, the fingerprint of the secrets it reads at start (compose labels use it).
    assert sorted(line[2:] for line in listed.splitlines()) == sorted([*target.rendered.shipped, ".env"])
    secret_dirs = target.host.check_output(f"ls {target.project_dir}/secrets").split()
    services = target.rendered.compose["services"]
    # Both colours' secrets: the idle colour gets its files ready for the next release.
    assert sorted(secret_dirs) == sorted(["fingerprints"] + [name for name in services
                                                             if target.instance(name).secrets])
    # No rotation is pending: no old value is left anywhere.
    assert target.host.check_output(f"find {target.project_dir}/secrets -name '*.retiring'") == ""


def test_the_env_file_holds_fingerprints_and_release_versions_only_and_is_root_only(target):
    env = target.host.file(f"{target.project_dir}/.env")
    assert env.mode == 0o600 and env.uid == 0
    versions = {}
    for line in env.content_string.splitlines():
        name, value = line.split("=", 1)
        if name.startswith("SHIPYARD_VERSION"):
            versions[name] = value
            continue
        assert name.startswith("SHIPYARD_SECRETS_") and len(value) == 16, name
    # The image versions of the release state (none before the first release: the render's defaults).
    assert versions in ({}, target.release.env_variables())


def test_the_host_records_its_secrets_by_fingerprint_only(target):
    recorded = target.host.file(f"{target.project_dir}/secrets/fingerprints")
    assert recorded.mode == 0o400 and recorded.uid == 0
    names = sorted(line.split()[0] for line in recorded.content_string.splitlines())
    assert names == sorted(SECRET_NAMES)
    for line in recorded.content_string.splitlines():
        assert len(line.split()[1]) == 16  # a fingerprint, not a value (values are 43 characters)


def test_secret_files_on_host_are_0400_and_owned_by_their_reader(target, service):
    spec = target.instance(service).service
    for secret in target.instance(service).secrets:
        f = target.host.file(f"{target.project_dir}/secrets/{service}/{secret.target}")
        assert f.is_file and f.mode == 0o400 and f.uid == spec.uid, secret.target
    assert target.host.file(f"{target.project_dir}/secrets").mode == 0o700


def test_secret_files_inside_container(target, service):
    spec = target.instance(service).service
    files = target.instance(service).secrets
    if spec.one_shot or not files:
        pytest.skip("no running container or no secrets")
    mount = spec.secrets_mount or "/run/secrets"
    for secret in files:
        code, out, err = target.exec(service, ["stat", "-L", "-c", "%a %u", f"{mount}/{secret.target}"])
        assert code == 0, err
        assert out.split() == ["400", str(spec.uid)], secret.target
    # Its own folder only: no other service's secret is visible in it.
    code, out, err = target.exec(service, ["ls", "-A", mount])
    assert code == 0, err
    assert sorted(out.split()) == sorted(s.target for s in files)


def test_no_secret_value_in_env_compose_or_config(target):
    # Every value the environment has (decrypted from this checkout's store, as the deploy does).
    values = [secret.value for secret in load_or_create(REPO, target.settings.name, generate_missing=False).values()]
    assert values, "expected some secrets to check"
    haystacks = [" ".join(c["Config"]["Env"] or []) + " ".join(c["Config"]["Cmd"] or []) for c in target.containers()]
    haystacks += [content.decode() for content in target.rendered.files.values()]
    haystacks.append(target.host.file(f"{target.project_dir}/secrets/fingerprints").content_string)
    haystacks.append(target.host.file(f"{target.project_dir}/.env").content_string)
    # A certificate bundle of a part that is off (the registry's, TLS at an edge without it) is
    # issued empty: nothing of it can leak.
    for value in filter(None, values):
        assert len(value) >= 32  # a UUID token is 36 characters, a gossip key 44
        assert not any(value in text for text in haystacks)
