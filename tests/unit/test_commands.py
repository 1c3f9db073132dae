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


def test_parallel_reads_keep_each_commands_exit_code_and_output():
    import subprocess

    script = commands.parallel([["echo", "a; rm -rf /"], ["sh", "-c", "echo two; echo why >&2; exit 3"], ["true"]])
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    # stderr is kept per job: a failed state read reports its cause
    assert commands.split_parallel(out, 3) == [(0, "a; rm -rf /\n", ""), (3, "two\n", "why\n"), (0, "", "")]
