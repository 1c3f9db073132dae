from shipyard.apply.engine import DockerEngineState, compose_package


def test_compose_v2_package_per_distro():
    assert compose_package("debian", "trixie") == "docker-compose"
    assert compose_package("ubuntu", "noble") == "docker-compose-v2"
    # bookworm's docker-compose is v1: it must come from trixie's .deb instead.
    assert compose_package("debian", "bookworm") is None


def test_engine_fact_parses_key_value_lines():
    state = DockerEngineState().process(["dockerd=/usr/sbin/dockerd", "compose=2.26.1", "server=",
                                         "systemd=no", "os=debian", "codename=bookworm"])
    assert state["dockerd"] == "/usr/sbin/dockerd" and state["server"] == "" and state["codename"] == "bookworm"
