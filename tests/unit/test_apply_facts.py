"""Facts whose command prints nothing in the common case must still give a usable value
(pyinfra returns the fact's default instead of calling ``process`` on no output)."""

import hashlib
import os
import subprocess
from pathlib import Path

from shipyard import commands
from shipyard.apply.private_files import PathStates, WantedPath, archive, extract_argv
from shipyard.apply.image_pull import MissingImages


def test_fresh_host_has_no_path_states(tmp_path):
    assert PathStates.default().states == {}
    command = PathStates().command((str(tmp_path / "project"),), (str(tmp_path / "project"),))
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout.splitlines()
    assert PathStates().process(output).states == {}


def test_path_states_give_each_paths_numeric_owner_mode_and_digest(tmp_path):
    """The fact's own command, run by a shell as a host's would: every given path that exists
    and everything below the root, files by the sha256 of their content."""
    root = tmp_path / "project"
    (root / "secrets" / "api").mkdir(parents=True)
    (root / "compose.yaml").write_text("services: {}\n")
    key = root / "secrets" / "api" / "jwt key"  # a space in a name
    key.write_bytes(b"s3cret")
    os.chown(root / "secrets" / "api", 10001, 10001)
    os.chmod(root / "secrets" / "api", 0o500)
    os.chown(key, 10001, 10001)
    os.chmod(key, 0o400)
    elsewhere = tmp_path / "routing.conf"
    elsewhere.write_text("blue")
    command = PathStates().command((str(root), str(elsewhere), str(tmp_path / "missing")), (str(root),))
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout.splitlines()
    states = PathStates().process(output).states
    assert states[str(key)] == (10001, 10001, "400", hashlib.sha256(b"s3cret").hexdigest())
    assert states[str(root / "secrets" / "api")] == (10001, 10001, "500", "dir")
    assert states[str(root / "compose.yaml")][3] == hashlib.sha256(b"services: {}\n").hexdigest()
    assert states[str(elsewhere)][3] == hashlib.sha256(b"blue").hexdigest()
    assert set(states) == {str(root), str(root / "compose.yaml"), str(root / "secrets"), str(root / "secrets" / "api"),
                           str(key), str(elsewhere)}


def test_one_operation_for_several_roots_and_a_kept_file():
    """The project, the release routing (another root) and the audit trail's file (kept: made
    empty when missing, its content never replaced, only its owner and mode) in one read."""
    from shipyard.apply.private_files import path_changes

    root, routing, trail = "/opt/shipyard/ci", "/opt/shipyard/.ci.release/routing", "/opt/shipyard/.ci.audit.log"
    wanted = [WantedPath(trail, 0, "640", b"", keep_content=True), WantedPath(root, 0, "755"),
              WantedPath(f"{root}/compose.yaml", 0, "644", b"services: {}\n"),
              WantedPath(routing, 0, "755"), WantedPath(f"{routing}/live.conf", 0, "644", b"blue")]
    digest = hashlib.sha256(b"services: {}\n").hexdigest()
    states = {trail: (0, 0, "640", hashlib.sha256(b"operators' lines").hexdigest()), root: (0, 0, "755", "dir"),
              f"{root}/compose.yaml": (0, 0, "644", digest), f"{root}/old.conf": (0, 0, "644", "x"),
              routing: (0, 0, "755", "dir"), f"{routing}/live.conf": (0, 0, "644", hashlib.sha256(b"green").hexdigest()),
              f"{routing}/stale.conf": (0, 0, "644", "y")}
    leftovers, written, owned = path_changes(states, wanted, (root, routing))
    assert leftovers == sorted([f"{root}/old.conf", f"{routing}/stale.conf"])
    assert [w.path for w in written] == [f"{routing}/live.conf"] and owned == []  # the trail's lines stay
    states[trail] = (0, 0, "600", "whatever")
    assert [w.path for w in path_changes(states, wanted, (root, routing))[2]] == [trail]  # only its mode
    del states[trail]
    made = path_changes(states, wanted, (root, routing))[1][0]
    assert (made.path, made.content, made.mode) == (trail, b"", "640")


def test_the_project_read_comes_back_with_the_path_states_in_one_round_trip(tmp_path):
    """PathStates' ``then`` command: its output after the states (the states unchanged), and a
    project read parsed from it (a compose project's config hashes, image ids, containers)."""
    from shipyard.apply import converge

    root = tmp_path / "project"
    root.mkdir()
    (root / "compose.yaml").write_text("x")
    then = commands.parallel([["printf", "api abc\\nworker def\\n"], ["printf", '["app:1"] sha256:aa\\n'],
                              ["true"]])  # no container
    command = PathStates().command((str(root),), (str(root),), then=then)
    read = PathStates().process(subprocess.run(["sh", "-c", command], capture_output=True, text=True)
                                .stdout.splitlines())
    assert set(read.states) == {str(root), str(root / "compose.yaml")}
    hashes, ids, containers = converge.parse_project_read(read.then, str(root), "p")
    assert hashes == {"api": "abc", "worker": "def"} and ids == {"app:1": "sha256:aa"} and containers == []
    assert PathStates().process(["0 0 755 d /x"]).then is None  # no then asked for: none


def test_no_missing_images_is_an_empty_list():
    assert MissingImages.default() == []
    assert MissingImages().process(["nginx:1.22.1", ""]) == ["nginx:1.22.1"]


def test_what_a_render_no_longer_has_is_removed_top_most_only():
    from shipyard.apply.private_files import leftover_paths

    root = "/opt/shipyard/ci"
    existing = {root, f"{root}/compose.yaml", f"{root}/redis", f"{root}/redis/sentinel.conf",
                f"{root}/secrets", f"{root}/secrets/postgres-replica-2", f"{root}/secrets/postgres-replica-2/x",
                "/opt/shipyard/other/compose.yaml"}
    wanted = {root, f"{root}/compose.yaml", f"{root}/redis", f"{root}/secrets"}
    assert leftover_paths(existing, wanted, root) == [f"{root}/redis/sentinel.conf",
                                                      f"{root}/secrets/postgres-replica-2"]
    assert leftover_paths(existing, existing, root) == []


def test_a_failed_pull_explains_itself_and_leaves_no_temp_file(tmp_path, monkeypatch):
    """The pull command keeps docker's output in a private mktemp file, not a fixed /tmp path."""
    import subprocess
    import types

    import shipyard.apply.image_pull as pull

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "docker").write_text("#!/bin/sh\necho 'Error response from daemon: no registry' >&2\nexit 1\n")
    (fake_bin / "docker").chmod(0o755)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(pull, "host", types.SimpleNamespace(name="h1"))
    script = pull.pull_or_explain("postgres:15.10-bookworm; rm -rf /", "production")
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                            env={"PATH": f"{fake_bin}:/usr/bin:/bin", "TMPDIR": str(temp)})
    assert result.returncode == 1
    assert "no registry" in result.stderr and "host h1: cannot pull postgres:15.10-bookworm; rm -rf /" in result.stderr
    assert list(temp.iterdir()) == []


def test_what_differs_reaches_the_host_as_one_archive_with_owners_modes_and_contents(tmp_path):
    """The archive project_paths uploads, extracted by the command it runs (GNU tar, as root):
    new directories and files with their numeric owners and modes, a changed file replaced, a
    file the archive does not name left alone."""
    root = tmp_path / "project"
    (root / "secrets").mkdir(parents=True)
    (root / "compose.yaml").write_text("old")
    (root / "kept.conf").write_text("kept")
    items = [WantedPath(f"{root}/compose.yaml", 0, "644", b"services: {}\n"),
             WantedPath(f"{root}/secrets/api", 10001, "500"),
             WantedPath(f"{root}/secrets/api/jwt", 10001, "400", b"s3cret"),
             WantedPath(f"{root}/new/deep", 0, "755"),
             WantedPath(f"{root}/new/deep/file", 999, "640", b"x")]
    tar_path = tmp_path / "paths.tar"
    tar_path.write_bytes(archive(items))
    assert archive(items) == tar_path.read_bytes()  # deterministic
    subprocess.run(extract_argv(str(tar_path)), check=True)
    for item in items:
        stat = Path(item.path).stat()
        assert (stat.st_uid, stat.st_gid, f"{stat.st_mode & 0o7777:o}") == (item.uid, item.uid, item.mode), item.path
        if item.content is not None:
            assert Path(item.path).read_bytes() == item.content
    assert (root / "kept.conf").read_text() == "kept"


def test_the_guards_read_fingerprints_ports_and_engine_in_one_command(tmp_path):
    """BeforeChanges' command run by a shell as a host's would: each part's output reaches its
    own fact's parsing (a fresh host: no fingerprints; then a recorded file)."""
    from shipyard.apply.guard import BeforeChanges
    root = tmp_path / "project"
    fact = BeforeChanges()

    def read():
        command = fact.command(str(root / "secrets" / "fingerprints"))
        return fact.process(subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout.splitlines())

    fingerprints, (tcp, _), engine_state, images = read()
    assert fingerprints == {} and images == {}  # no image asked for
    assert "local_address" in tcp  # /proc/net/tcp's header: the port holders' part was run
    assert {"dockerd", "compose", "server", "systemd", "os"} <= set(engine_state)
    (root / "secrets").mkdir(parents=True)
    (root / "secrets" / "fingerprints").write_text("jwt_signing_key abc123\nredis_password def456\n")
    fingerprints, _, _, _ = read()
    assert fingerprints == {"jwt_signing_key": "abc123", "redis_password": "def456"}


def test_the_guards_read_the_images_asked_for_and_tell_when_a_ref_was_not(tmp_path, monkeypatch):
    """The images part of the guards' read: docker's inspect of the refs (one of them missing:
    docker exits 1 and still prints the others); held_images answers from it only for refs it
    asked about, else None (the caller asks the host itself)."""
    from shipyard.apply import guard
    from shipyard.apply.guard import BeforeChanges
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A docker that holds app:1 only, answering as docker's inspect does for a missing ref.
    (bin_dir / "docker").write_text(
        '#!/bin/sh\n[ "$1 $2" = "image inspect" ] || exit 0\nshift 4\nrc=0\n'
        'for ref in "$@"; do if [ "$ref" = app:1 ]; then echo \'["app:1"] sha256:aa {"l":"v"}\'; '
        'else echo "Error: No such image: $ref" >&2; rc=1; fi; done\nexit $rc\n')
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    command = BeforeChanges().command(str(tmp_path / "fingerprints"), images=("app:1", "db:2"))
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout.splitlines()
    *_, images = BeforeChanges().process(output)
    assert set(images) == {"app:1"} and images["app:1"].id == "sha256:aa"
    monkeypatch.setitem(guard._READ, "h1", ({}, ("", ""), (frozenset({"app:1", "db:2"}), images)))
    assert guard.held_images("h1", ["db:2"]) == {}  # asked about, not held
    assert set(guard.held_images("h1", ["app:1", "db:2"])) == {"app:1"}
    assert guard.held_images("h1", ["app:1", "web:3"]) is None  # web:3 was not asked about
    assert guard.held_images("h2", ["app:1"]) is None  # h2 not read
