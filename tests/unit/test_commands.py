import shlex

from shipyard import commands


def test_injection_shaped_values_stay_single_arguments():
    argv = commands.compose_up_wait("/opt/x; rm -rf /", "p$(id)", ["api; rm -rf /", "`reboot`"], 30)
    line = commands.to_shell(argv)
    assert shlex.split(line) == argv
    assert "'api; rm -rf /'" in line and "'/opt/x; rm -rf /'" in line


def test_compose_commands_name_project_and_file():
    argv = commands.compose_ps("/opt/shipyard/ci", "shipyard-ci")
    assert argv[:8] == ["docker", "compose", "--project-directory", "/opt/shipyard/ci", "-f",
                        "/opt/shipyard/ci/compose.yaml", "-p", "shipyard-ci"]
    assert argv[8:] == ["ps", "-a", "--format", "json"]


def test_a_projects_containers_are_inspected_in_one_command(tmp_path):
    """inspect_project_containers run by a shell against a docker that lists two containers of
    the project (asked by its label, one-offs left out), then none: one compact line a container
    (the fields a converge reads), nothing for none."""
    import subprocess

    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\necho "$*" >> "$(dirname "$0")/calls"\n'
                    'case "$1" in ps) cat "$(dirname "$0")/ids" ;; inspect) shift 3; for i; do echo "{\\"Id\\":\\"$i\\"}"; done ;; esac\n')
    fake.chmod(0o755)
    (tmp_path / "ids").write_text("abc\ndef\n")
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    argv = commands.inspect_project_containers("shipyard-ci; rm -rf /")
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout
    assert out.splitlines() == ['{"Id":"abc"}', '{"Id":"def"}']  # both ids to one inspect
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["ps -aq --filter label=com.docker.compose.project=shipyard-ci; rm -rf / "
                     "--filter label=com.docker.compose.oneoff=False", f"inspect --format {commands.INSPECTED} abc def"]
    (tmp_path / "ids").write_text("")
    assert subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout == ""


def test_the_inspect_format_gives_what_a_converge_reads(tmp_path):
    """INSPECTED as the engine fills it in, parsed by the converge (a health check or none)."""
    from shipyard.apply.converge import _containers

    line = ('{"Name":"/shipyard-ci-api-blue-1","Image":"sha256:1","Status":"running","ExitCode":0,"Health":"healthy",'
            '"Labels":{"com.docker.compose.service":"api-blue","com.docker.compose.config-hash":"h1"}}\n'
            '{"Name":"/shipyard-ci-migrate-1","Image":"sha256:2","Status":"exited","ExitCode":3,"Health":null,'
            '"Labels":null}\n')
    first, second = _containers(line)
    assert (first.name, first.service, first.health, first.config_hash, first.image_id) == (
        "shipyard-ci-api-blue-1", "api-blue", "healthy", "h1", "sha256:1")
    assert (second.status, second.exit_code, second.health, second.service) == ("exited", 3, None, "")
    for field in ("Name", "Image", "State.Status", "State.ExitCode", "State.Health.Status", "Config.Labels"):
        assert "." + field in commands.INSPECTED


def test_parallel_reads_keep_each_commands_exit_code_and_output():
    import subprocess

    script = commands.parallel([["echo", "a; rm -rf /"], ["sh", "-c", "echo two; echo why >&2; exit 3"], ["true"]])
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    # stderr is kept per job: a failed state read reports its cause
    assert commands.split_parallel(out, 3) == [(0, "a; rm -rf /\n", ""), (3, "two\n", "why\n"), (0, "", "")]
    # pyinfra's output of a command drops its last newline: the last job's (empty) stderr marker
    # ends it, and its stdout is still its own.
    assert commands.split_parallel(out.rstrip("\n"), 3)[2] == (0, "", "")
    script = commands.parallel([["true"], ["echo", "[1]"]])
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.rstrip("\n")
    assert commands.split_parallel(out, 2)[1] == (0, "[1]\n", "")


def test_ssh_takes_the_inventorys_key_known_hosts_user_and_port_and_never_prompts():
    from pathlib import Path

    from shipyard.inventory import load_environment

    repo = Path(__file__).resolve().parents[2]
    h1 = next(h for h in load_environment(repo, "multi", {}).hosts if h.name == "h1")
    argv = commands.ssh(h1, ["cat", "/opt/a b"])
    assert argv[-2:] == ["root@10.231.250.11", "cat '/opt/a b'"]
    options = " ".join(argv[1:-2])
    assert "-i /tmp/shipyard-testhosts/id_ed25519 -o IdentitiesOnly=yes" in options
    assert "-o UserKnownHostsFile=/tmp/shipyard-testhosts/known_hosts -o StrictHostKeyChecking=yes" in options
    assert "-o BatchMode=yes" in options  # a password or passphrase prompt would hang a deploy
    tunnel = commands.ssh_forward_docker(h1.model_copy(update={"ssh_port": 2222}), "/tmp/x/docker.sock")
    assert tunnel[-3:] == ["-L", "/tmp/x/docker.sock:/var/run/docker.sock", "root@10.231.250.11"]
    assert "-p" in tunnel and tunnel[tunnel.index("-p") + 1] == "2222" and "ExitOnForwardFailure=yes" in tunnel


def test_a_user_that_becomes_root_by_sudo_runs_every_command_through_sudo_n_and_reaches_the_engine_by_dial_stdio():
    from pathlib import Path

    from shipyard.inventory import load_environment

    repo = Path(__file__).resolve().parents[2]
    h2 = next(h for h in load_environment(repo, "multi", {}).hosts if h.name == "h2")
    assert (h2.ssh_user, h2.sudo) == ("shipyard", True)
    # -n: a sudo that wants a password fails (the reachability check says so) instead of waiting.
    assert commands.ssh(h2, ["cat", "/opt/a b"])[-2:] == ["shipyard@10.231.250.12", "sudo -n -H -- cat '/opt/a b'"]
    master = commands.ssh_control_master(h2, "/tmp/x/ssh.ctl")
    assert "ControlMaster=yes" in master and "ControlPath=/tmp/x/ssh.ctl" in master and master[-1] == "shipyard@10.231.250.12"
    dial = commands.ssh_engine_dial(h2, "/tmp/x/ssh.ctl")
    assert "ControlPath=/tmp/x/ssh.ctl" in dial and "ControlMaster=yes" not in dial
    assert dial[-1] == "sudo -n -H -- docker system dial-stdio"


def test_ssh_to_a_host_without_ssh_data_leaves_it_to_the_ssh_client():
    from shipyard.settings import HostSettings

    host = HostSettings(name="app-1", connect="app-1.example.net", address="10.0.0.1", roles=("app",))
    assert commands.ssh(host, ["true"]) == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                                            "app-1.example.net", "true"]


def test_images_move_as_argv_and_keep_their_repository_whatever_address_reaches_the_registry():
    from pathlib import Path

    from shipyard.components.registry import client
    from shipyard.inventory import load_environment

    repo = Path(__file__).resolve().parents[2]
    settings = load_environment(repo, "multi", {})
    h1 = settings.hosts[0]
    assert commands.ssh_forward_port(h1, 41000, "10.231.250.11", 5000)[-3:] == [
        "-L", "127.0.0.1:41000:10.231.250.11:5000", "root@10.231.250.11"]
    assert commands.docker_save(["a:1", "b:2"]) == ["docker", "save", "a:1", "b:2"]
    # Pushed through a tunnel (127.0.0.1:<port>/<repository>), pulled by the registry's name.
    assert client.repository_ref("shipyard/postgres:15") == "shipyard/postgres:15"
    assert client.repository_ref("redis") == "shipyard/redis:latest"
    assert client.pushed_ref(settings, "shipyard/postgres:15") == "10.231.250.11:5000/shipyard/postgres:15"


def test_a_projects_file_digests_come_in_one_command_and_skip_what_is_missing(tmp_path):
    import hashlib
    import subprocess

    (tmp_path / "nginx").mkdir()
    (tmp_path / "nginx" / "edge.conf").write_bytes(b"server {}\n")
    (tmp_path / "a b.txt").write_bytes(b"x")
    out = subprocess.run(commands.sha256_of_files(str(tmp_path), ["nginx/edge.conf", "a b.txt", "gone.conf"]),
                         capture_output=True, text=True, check=True).stdout
    conf = hashlib.sha256(b"server {}\n").hexdigest()
    assert out.splitlines() == [f"{conf}  nginx/edge.conf",
                                f"{hashlib.sha256(b'x').hexdigest()}  a b.txt"]
    nothing = subprocess.run(commands.sha256_of_files(str(tmp_path / "not-deployed"), ["x"]), capture_output=True,
                             text=True, check=True)
    assert nothing.stdout == ""
