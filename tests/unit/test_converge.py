"""What a failed health gate reports of compose's own output."""

from shipyard.apply.converge import _compose_errors


def test_compose_progress_lines_are_left_out_of_a_failure_report_and_its_errors_kept():
    stderr = (" Container shipyard-ci-postgres-1  Running\n Container shipyard-ci-redis-1  Waiting\n"
              " Container shipyard-ci-postgres-replica-1-1  Started\n Container shipyard-ci-redis-1  Healthy\n"
              "container shipyard-ci-postgres-replica-1-1 is unhealthy\n")
    assert _compose_errors(stderr) == "container shipyard-ci-postgres-replica-1-1 is unhealthy"


def _state(name, one_shot=False, depends_on=()):
    from shipyard.apply.converge import ServiceState

    return ServiceState(name=name, tier="app", replicas=1, image="i", one_shot=one_shot, reload_signal=None,
                        depends_on=tuple(depends_on))


def test_one_shots_a_long_running_service_waits_for_are_left_to_compose_the_others_run_alone_in_order():
    from shipyard.apply.converge import one_shots_alone

    jobs = [_state("db-setup", True), _state("migrate", True, ["db-setup"]), _state("consul-setup", True)]
    # The API's step: it waits for migrate, which waits for db-setup; consul-setup nobody waits for.
    with_api = {s.name: s for s in [*jobs, _state("api", depends_on=["migrate", "postgres"])]}
    assert one_shots_alone(["db-setup", "migrate", "consul-setup", "api"], with_api) == ["consul-setup"]
    # A step of jobs alone (the API waits for a live setup, a step later): each runs by itself,
    # what it depends on first — compose's --wait takes a job's exit, even 0, for a failure.
    alone = {s.name: s for s in jobs}
    assert one_shots_alone(["migrate", "consul-setup", "db-setup"], alone) == ["db-setup", "migrate", "consul-setup"]
    # The API up to date, its jobs changed (the log store's template job after a store change):
    # nothing started waits for them, so they run alone too.
    assert one_shots_alone(["db-setup", "migrate"], with_api) == ["db-setup", "migrate"]
