"""Blue-green releases (shipyard.bluegreen): the host's state, what a deploy does with it, the
watch's verdict, and how colours render."""

import json

import pytest

from shipyard import image_plan, bluegreen, topology
from shipyard.inventory import load_environment
from shipyard.bluegreen import ReleaseState, Traffic, Watch, routed_traffic, verdict
from shipyard.render import render_environment
from shipyard.settings import ReleaseSettings


def test_a_host_no_release_touched_runs_the_settings_version_in_blue():
    state = ReleaseState.initial("0.1.0")
    assert (state.live, state.live_version, state.newest) == ("blue", "0.1.0", "0.1.0")
    assert state.colours_to_run() == ("blue",) and state.colours_to_remove(0) == ("green",)


def test_a_release_starts_the_idle_colour_and_the_switch_keeps_the_old_one_warm():
    state = ReleaseState.initial("1").starting_release("2")
    assert state.starting == "green" and state.versions == {"blue": "1", "green": "2"} and state.newest == "2"
    # A deploy during the release runs both, converges only the new one (the live one is held as
    # it is), and never removes the one being started.
    assert state.colours_to_run() == ("blue", "green") and state.colours_to_remove(0) == ()
    assert state.colours_to_converge() == ("green",)
    live = state.switched("green", keep_previous_s=600, now=1000)
    assert (live.live, live.starting, live.idle) == ("green", None, "blue")
    assert live.warm(1599) and live.colours_to_remove(1599) == ()
    assert not live.warm(1600) and live.colours_to_remove(1600) == ("blue",)
    # The warm colour is not converged by a plain deploy: left as it is.
    assert live.colours_to_run() == ("green",) and live.colours_to_converge() == ("green",)


def test_state_round_trips_and_bad_files_say_where():
    state = ReleaseState.initial("1").starting_release("2").switched("green", 60, 5)
    assert ReleaseState.parse(state.dump(), "x") == state
    assert ReleaseState.parse("", "x") is None
    with pytest.raises(ValueError, match="/opt/x/state.json: not a release state"):
        ReleaseState.parse("{", "/opt/x/state.json")
    with pytest.raises(ValueError, match="unknown colour 'red'"):
        ReleaseState.parse(json.dumps({"live": "red"}), "x")


def test_env_variables_give_each_colour_its_version_and_the_one_shots_the_newest():
    state = ReleaseState.initial("1").starting_release("2").switched("green", 60, 0)
    assert state.env_variables() == {"SHIPYARD_VERSION_BLUE": "1", "SHIPYARD_VERSION_GREEN": "2", "SHIPYARD_VERSION": "2"}
    # A rollback does not take the migrations' version back.
    back = state.switched("blue", 60, 0)
    assert back.env_variables()["SHIPYARD_VERSION"] == "2" and back.live_version == "1"


LOG = "\n".join([
    '127.0.0.1 "POST /v1/tasks HTTP/1.1" 202 120 0.010 rid=a upstream=1.2.3.4:8000 colour=green',
    '127.0.0.1 "POST /v1/tasks HTTP/1.1" 500 80 0.020 rid=b upstream=1.2.3.4:8000 colour=green',
    '127.0.0.1 "GET /v1/tasks/x HTTP/1.1" 200 300 0.300 rid=c upstream=1.2.3.4:8000 colour=blue',
    '172.18.0.9 "POST /v1/tasks HTTP/1.1" 202 120 0.010 rid=d upstream=1.2.3.5:8000 colour=preview-green',
    'a line that is not an access log line',
])


def test_routed_traffic_counts_one_colours_user_answers():
    green = routed_traffic(LOG, "green")
    assert (green.answers, green.errors) == (2, 1) and green.p95_ms == pytest.approx(20)
    assert routed_traffic(LOG, "blue").answers == 1  # the preview route's answers are not users'


def _traffic(answers: int, errors: int, ms: float) -> Traffic:
    return Traffic(answers, errors, tuple([ms / 1000] * answers))


def test_verdict_rolls_back_on_errors_or_latency_beyond_the_old_colour_and_not_on_little_traffic():
    rules = ReleaseSettings()
    old = _traffic(400, 0, 20)
    assert verdict(old, _traffic(200, 0, 25), rules) is None
    assert "error rate 15.0%" in verdict(old, _traffic(200, 30, 25), rules)
    assert "p95 400 ms is above 100 ms" in verdict(old, _traffic(200, 0, 400), rules)
    assert verdict(old, _traffic(rules.min_requests - 1, rules.min_requests - 1, 25), rules) is None
    # The old colour's own error rate is allowed on top (a flaky dependency is not the release's fault).
    assert verdict(_traffic(100, 10, 20), _traffic(100, 11, 20), rules) is None


def test_the_watch_forgives_a_cold_first_stretch_but_not_a_slow_colour():
    rules = ReleaseSettings()  # min_requests 20, latency_strikes 3
    old = _traffic(400, 0, 24)
    cold_start = Watch(old, rules)
    # The first second of a new colour: 93 answers at 214 ms (the CI run that rolled back a good release).
    assert cold_start.add(_traffic(93, 0, 214)) is None
    assert all(cold_start.add(_traffic(100, 0, 25)) is None for _ in range(4))
    assert cold_start.seen.answers == 493 and cold_start.seen.p95_ms == pytest.approx(214)  # as one whole: slow
    slow = Watch(old, rules)
    assert slow.add(_traffic(100, 0, 300)) is None and slow.add(_traffic(100, 0, 300)) is None
    reason = slow.add(_traffic(100, 0, 300))
    assert "p95 300 ms is above 100 ms" in reason and "3 stretches" in reason
    # A stretch is min_requests answers however many windows they came in: low traffic is judged too.
    trickle = Watch(old, rules)
    verdicts = [trickle.add(_traffic(7, 0, 300)) for _ in range(9)]
    assert verdicts[:8] == [None] * 8 and "3 stretches" in verdicts[8]
    # Slow, fast, slow, slow: not three in a row.
    mixed = Watch(old, rules)
    assert [mixed.add(_traffic(50, 0, ms)) for ms in (300, 25, 300, 300)] == [None] * 4


def test_the_watch_rolls_back_on_errors_at_once():
    watch = Watch(_traffic(400, 0, 24), ReleaseSettings())
    assert watch.add(_traffic(10, 0, 25)) is None  # under min_requests: nothing decided
    assert "error rate" in watch.add(_traffic(30, 10, 25))


def test_history_table_has_a_row_per_record():
    record = bluegreen.Record("release", "2", "green", "1", 0, "me@here", "rolled back", {"start": 12.3}, "error rate")
    table = bluegreen.history_table(bluegreen.parse_history(record.line()))
    assert "rolled back" in table and "start 12.3" in table and "error rate" in table


def test_coloured_services_render_twice_with_the_versions_of_the_release_state(repo):
    settings = load_environment(repo, "local", {})
    services = render_environment(settings)["local"].compose["services"]
    assert services["api-blue"]["image"] == "shipyard/taskplatform:${SHIPYARD_VERSION_BLUE:-0.1.0}"
    assert services["api-green"]["environment"]["TASKS_RELEASE_COLOUR"] == "green"
    assert services["api-green"]["environment"]["TASKS_BUILD_VERSION"] == "${SHIPYARD_VERSION_GREEN:-0.1.0}"
    assert services["migrate"]["image"] == "shipyard/taskplatform:${SHIPYARD_VERSION:-0.1.0}"
    # Side by side on one host: the green API publishes the next port.
    assert services["api-blue"]["ports"] == ["127.0.0.1:8000:8000"]
    assert services["api-green"]["ports"] == ["127.0.0.1:8001:8000"]
    # Nothing starts a colour because it starts: the edge does not depend on either.
    assert not any(name.startswith("api-") for name in services["edge"].get("depends_on", {}))
    # The router switches (its routing file); the edge, which holds the users' connections, does not.
    assert "/opt/shipyard/.local.release/routing:/etc/nginx/shipyard-release:ro" in services["router"]["volumes"]
    assert not any("release" in volume for volume in services["edge"]["volumes"])
    assert image_plan.resolved_ref(services["api-green"]["image"], {"SHIPYARD_VERSION_GREEN": "2"}) == \
        "shipyard/taskplatform:2"


def test_each_colour_is_its_own_instance_on_each_app_host(repo):
    settings = load_environment(repo, "production", {})
    names = [(i.host.name, i.name) for i in topology.build(settings).instances_of("taskplatform", "api")]
    assert names == [("app-1", "api-blue"), ("app-2", "api-blue"), ("app-1", "api-green"), ("app-2", "api-green")]


@pytest.mark.parametrize("value", ["1.0", "0.1.0", "2026-11-24.1", "abc123def456-1a2b3c4d", "v_1", "x" * 64])
def test_a_version_is_what_an_image_tag_and_a_dotenv_line_can_hold(value):
    assert bluegreen.check_version(value) == value


@pytest.mark.parametrize("value", ["1.0 x", "", "1.0\n", "x" * 65, "1.0;reboot", "$(id)", "a/b", "1:2", "é"])
def test_any_other_version_stops_saying_where_what_and_the_fix(value):
    from shipyard.errors import ShipyardError

    with pytest.raises(ShipyardError) as err:
        bluegreen.check_version(value)
    assert err.value.where.startswith("VERSION")
    assert repr(value) in err.value.what and bluegreen.VERSION_PATTERN in err.value.what
    assert "VERSION=1.4.2" in err.value.fix and "leave VERSION out" in err.value.fix


def test_a_release_refuses_a_bad_version_before_it_touches_anything(repo):
    """The entry of the release steps checks too (a caller other than the CLI): before the
    environment's lock, the build or the state (production has no @local host: anything
    past the check would stop with another error)."""
    from shipyard.controller import releases
    from shipyard.errors import ShipyardError

    def deploy(data):
        raise AssertionError("deployed")

    with pytest.raises(ShipyardError, match="VERSION"):
        releases.release_version(load_environment(repo, "production", {}), "1.0 x", False, deploy, 0, repo)
