"""The task platform's operator commands (shipyard/components/taskplatform/commands.py): `make
token` runs `taskplatform token` in the live API container with these arguments."""

import shlex

from shipyard.components.taskplatform.commands import COMMANDS, token_argv


def test_make_token_passes_what_is_given_and_leaves_the_rest_to_the_container_s_defaults():
    assert token_argv("acme", None, None) == ["taskplatform", "token", "--tenant", "acme"]
    assert token_argv("acme", "tasks:read,admin", 3600.0) == [
        "taskplatform", "token", "--tenant", "acme", "--scopes", "tasks:read,admin", "--ttl", "3600"]
    assert token_argv("acme", "", 1.5)[-2:] == ["--ttl", "1.5"]


def test_a_tenant_shaped_like_a_shell_command_stays_one_argument():
    argv = token_argv("acme; rm -rf /", "tasks:read", None)
    assert argv[3] == "acme; rm -rf /" and shlex.split(shlex.join(argv)) == argv


def test_make_token_takes_tenant_scopes_and_ttl():
    token = next(c for c in COMMANDS if c.name == "token")
    assert [(o.make, o.required, o.number) for o in token.options] == [
        ("TENANT", True, False), ("SCOPES", False, False), ("TTL", False, True)]
