from pathlib import Path

import pytest

from shipyard.errors import SettingsError
from shipyard.inventory import load_environment
from shipyard.lock import LOCK_DIR_VAR
from shipyard.secretstore import IDENTITY_DIR_VAR


def write_inventory(tmp_path: Path, body: str, env: str = "t") -> Path:
    (tmp_path / "inventories").mkdir(exist_ok=True)
    (tmp_path / "inventories" / f"{env}.py").write_text(body)
    return tmp_path


ONE_HOST = '\n_h = [("@local", {"shipyard_host": "box"})]\nedge = app = data = control = observability = _h\n'


def test_valid_inventory_loads_with_defaults(tmp_path):
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "t"}' + ONE_HOST)
    settings = load_environment(repo, "t", {})
    assert settings.hosts[0].name == "box"
    assert settings.hosts[0].roles == ("edge", "app", "data", "control", "observability")
    # No `cache` group: the `data` hosts are its hosts.
    assert settings.hosts_with_role("cache") == settings.hosts_with_role("data") == (settings.hosts[0],)
    assert settings.ports.postgres == 5432


def test_unknown_key_names_file_key_path_and_fix(tmp_path):
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "t", "ports": {"edge_htp": 1}}' + ONE_HOST)
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "t", {})
    text = str(err.value)
    assert "inventories/t.py: SHIPYARD.ports.edge_htp" in text
    assert ("allowed keys here: alertmanager_http, api_direct, consul_http, edge_bind, edge_http, edge_https, elasticsearch_http, "
            "etcd_client, grafana_http, host_prometheus_http, kibana_http, logstash_tcp, pgbackrest_repo, postgres, prometheus_http, redis") in text
    assert "no host was touched" in text


def test_every_problem_is_reported_at_once(tmp_path):
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "t", "ports": {"postgres": 0}, "app": {"api_processes": "x"}}' + ONE_HOST)
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "t", {})
    assert len(err.value.problems) == 2
    assert "SHIPYARD.ports.postgres" in str(err.value) and "use a number with ge 1" in str(err.value)


def test_environment_variable_overrides_inventory(tmp_path):
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "t", "ports": {"edge_http": 8080}}' + ONE_HOST)
    settings = load_environment(repo, "t", {"SHIPYARD_PORTS__EDGE_HTTP": "9191"})
    assert settings.ports.edge_http == 9191


def test_bad_environment_variable_is_named(tmp_path):
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "t"}' + ONE_HOST)
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "t", {"SHIPYARD_PORTS__EDGE_HTTP": "lots"})
    assert err.value.where == "environment variable SHIPYARD_PORTS__EDGE_HTTP"


def test_misspelt_environment_variable_is_an_error(tmp_path):
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "t"}' + ONE_HOST)
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "t", {"SHIPYARD_PORT__EDGE_HTTP": "1"})
    assert "SHIPYARD_PORT__EDGE_HTTP" in str(err.value) and "no such setting" in str(err.value)


@pytest.mark.parametrize("key,value", [
    ("postgres", {"user": "api; rm -rf /"}),
    ("postgres", {"database": "x$(reboot)"}),
    ("app", {"version": "1.0 && curl evil"}),
    (None, {"deploy_root": "/opt/x; rm -rf /"}),
])
def test_shell_shaped_values_are_rejected(tmp_path, key, value):
    data = {"name": "t", **({key: value} if key else value)}
    repo = write_inventory(tmp_path, f"SHIPYARD = {data!r}" + ONE_HOST)
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "t", {})
    assert "use a value matching" in str(err.value)


def test_missing_role_says_which_group_to_add(tmp_path):
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "t"}\napp = data = ["@local"]\n')
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "t", {})
    assert "group 'edge'" in str(err.value) and "edge = [...]" in str(err.value)


def test_observability_turned_off_needs_no_observability_host(tmp_path):
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "t"}\n_h = [("@local", {"shipyard_host": "box"})]\n'
                                     'edge = app = data = control = _h\n')
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "t", {})
    assert "group 'observability': no host has the observability role (it runs alertmanager, elk, prometheus)" in str(err.value)
    settings = load_environment(repo, "t", {"SHIPYARD_PROMETHEUS__ENABLED": "false",
                                            "SHIPYARD_ALERTMANAGER__ENABLED": "false",
                                            "SHIPYARD_LOGS__ENABLED": "false"})
    assert not settings.prometheus.enabled and not settings.hosts_with_role("observability")


def test_unknown_group_and_host_data_are_errors(tmp_path):
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "t"}\nweb = ["@local"]\nedge = app = data = [("@local", {"adress": "x"})]\n')
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "t", {})
    text = str(err.value)
    assert "group 'web'" in text and "data.adress" in text


def test_a_non_root_ssh_user_needs_passwordless_sudo_named_before_any_host_is_touched(tmp_path):
    hosts = 'edge = app = data = control = observability = [("db-1.example.net", {"ssh_user": "deploy"%s})]\n'
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "t"}\n' + hosts % "")
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "t", {})
    text = str(err.value)
    assert "host db-1.example.net: data.ssh_user" in text and "'deploy' is not root and _sudo is not set" in text
    assert "add '_sudo': True" in text
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "t"}\n' + hosts % ', "_sudo": True, "_use_sudo_password": True')
    with pytest.raises(SettingsError, match="(?s)sudo password is not supported.*passwordless sudo"):
        load_environment(repo, "t", {})
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "t"}\n' + hosts % ', "_sudo": True')
    assert [(h.ssh_user, h.sudo) for h in load_environment(repo, "t", {}).hosts] == [("deploy", True)]


def test_name_must_match_file(tmp_path):
    repo = write_inventory(tmp_path, 'SHIPYARD = {"name": "other"}' + ONE_HOST)
    with pytest.raises(SettingsError, match="set name to 't'"):
        load_environment(repo, "t", {})


@pytest.mark.parametrize("env", ["local", "ci", "production"])
def test_shipped_inventories_validate(repo, env):
    settings = load_environment(repo, env, {})
    assert settings.name == env


def test_two_ports_on_one_number_are_refused_naming_both_keys(repo):
    from shipyard.inventory import load_environment

    with pytest.raises(SettingsError) as err:
        load_environment(repo, "local", {"SHIPYARD_PORTS__EDGE_HTTP": "8000"})
    text = str(err.value)
    assert "environment variable SHIPYARD_PORTS__EDGE_HTTP (host local, port 8000)" in text
    assert "ports.api_direct (api-blue) and ports.edge_http (edge) both publish 8000" in text
    # A numbered instance's port counts too: the first replica publishes at ports.postgres + 1.
    with pytest.raises(SettingsError) as err:
        load_environment(repo, "production", {"SHIPYARD_PORTS__SENTINEL": "5431"})
    assert "ports.postgres + 1 (postgres-replica-1) and ports.sentinel + 2 (redis-sentinel-3)" in str(err.value)
    # 0.0.0.0 overlaps every address of the host.
    with pytest.raises(SettingsError):
        load_environment(repo, "ci", {"SHIPYARD_PORTS__EDGE_BIND": "0.0.0.0", "SHIPYARD_PORTS__EDGE_HTTP": "15432"})
    load_environment(repo, "local", {"SHIPYARD_PORTS__EDGE_HTTP": "9191"})  # a free port is fine
    with pytest.raises(SettingsError) as err:  # Prometheus's loopback port counts like any other
        load_environment(repo, "local", {"SHIPYARD_PORTS__EDGE_HTTP": "9090"})
    assert "ports.edge_http (edge) and ports.prometheus_http (prometheus) both publish 9090" in str(err.value)


def test_a_single_host_component_refuses_a_second_host_in_its_group(tmp_path):
    from shipyard.inventory import load_environment

    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "two.py").write_text(
        'SHIPYARD = {"name": "two", "registry": {"enabled": True, "names": ["10.0.0.5"]}}\n'
        'edge = [("e.example", {"address": "10.0.0.1"})]\napp = [("a.example", {"address": "10.0.0.2"})]\n'
        'data = [("d1.example", {"address": "10.0.0.3"}), ("d2.example", {"address": "10.0.0.4"})]\n'
        'registry = [("r1.example", {"address": "10.0.0.5"}), ("r2.example", {"address": "10.0.0.6"})]\n')
    with pytest.raises(SettingsError) as err:
        load_environment(tmp_path, "two", {})
    text = str(err.value)
    assert "inventories/two.py: group 'registry'" in text
    assert "2 hosts (r1, r2) but this release runs registry on a single host" in text
    assert "put exactly one host in the registry group" in text
    # PostgreSQL's nodes and Redis's spread over the data hosts (the cache group's default).
    assert "runs postgres" not in text and "runs redis" not in text


def test_a_groups_hosts_are_taken_in_the_order_the_group_lists_them(tmp_path):
    from shipyard.inventory import load_environment

    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "two.py").write_text(
        'SHIPYARD = {"name": "two"}\n'
        '_a = ("a.example", {"address": "10.0.0.2"})\n_b = ("b.example", {"address": "10.0.0.3"})\n'
        'edge = [_a]\napp = [_a, _b]\ndata = [_b, _a]\ncontrol = [_a]\nobservability = [_a]\n')
    settings = load_environment(tmp_path, "two", {})
    assert [h.name for h in settings.hosts] == ["a", "b"]  # the environment's hosts: as they first appear
    assert [h.name for h in settings.hosts_with_role("app")] == ["a", "b"]
    assert [h.name for h in settings.hosts_with_role("data")] == ["b", "a"]
    assert [h.name for h in settings.hosts_with_role("cache")] == ["b", "a"]  # the data hosts by default


@pytest.mark.parametrize("variable", [LOCK_DIR_VAR, IDENTITY_DIR_VAR,
                                      "SHIPYARD_DEBIAN_MIRROR", "SHIPYARD_DEBIAN_SECURITY_MIRROR"])
def test_the_tools_own_variables_are_not_settings(repo, variable):
    """Variables the tool reads (the lock dir, the age identities, the base image's mirrors in
    images/base/build.sh) are documented to the user: setting one must not stop every command
    with 'no such setting'."""
    assert load_environment(repo, "local", {variable: "/tmp/somewhere"}).name == "local"
