"""Each component's containers run and are healthy; one-shot migrations exited 0."""



def test_service_is_running_and_healthy(target, service):
    state = target.container_of(service)["State"]
    if target.instance(service).service.one_shot:
        assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    else:
        assert state["Status"] == "running"
        if target.instance(service).service.health is None:
            # The exporters: their upstream images (scratch) hold nothing to probe with; whether
            # they answer is their scrape's health (shipyard/components/prometheus/checks.py).
            assert "Health" not in state
            return
        assert state["Health"]["Status"] == "healthy"


def test_no_container_restarting_in_a_loop(target, service):
    assert target.container_of(service)["RestartCount"] == 0
