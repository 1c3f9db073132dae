from shipyard.plan import DesiredService, ObservedContainer, plan_host


def want(name, tier, replicas=1, one_shot=False):
    return DesiredService(name, tier, replicas, f"h-{name}", "img", one_shot)


def have(name, service, **kw):
    base = dict(status="running", health="healthy", exit_code=0, config_hash=f"h-{service}", image_id="img")
    base.update(kw)
    return ObservedContainer(name=name, service=service, **base)


DESIRED = [want("postgres", "data"), want("migrate", "app", one_shot=True), want("api", "app"), want("edge", "edge")]
CURRENT = [have("pg", "postgres"), have("m", "migrate", status="exited", health=None), have("a", "api"), have("e", "edge")]


def test_nothing_to_do_when_everything_matches():
    plans = plan_host(DESIRED, CURRENT)
    assert [p.tier for p in plans] == ["data", "app", "edge"]
    assert all(p.up_to_date for p in plans)


def test_changed_config_marks_only_its_tier():
    current = [c if c.service != "api" else have("a", "api", config_hash="old") for c in CURRENT]
    plans = {p.tier: p for p in plan_host(DESIRED, current)}
    assert plans["app"].reasons == ["a: compose config changed"]
    assert plans["data"].up_to_date and plans["edge"].up_to_date


def test_missing_unhealthy_failed_oneshot_and_new_image_are_out_of_date():
    current = [have("pg", "postgres", health="unhealthy"), have("m", "migrate", status="exited", exit_code=1, health=None),
               have("e", "edge", image_id="older")]
    plans = {p.tier: p for p in plan_host(DESIRED, current)}
    assert plans["data"].reasons == ["pg: unhealthy"]
    assert "m: one-shot is exited (exit 1)" in plans["app"].reasons
    assert "api: 0 container(s), want 1" in plans["app"].reasons
    assert plans["edge"].reasons == ["e: image changed"]


def test_service_changes_name_the_changed_keys_and_config_files():
    from shipyard.plan import file_changes, service_changes

    deployed = {"services": {"a": {"environment": {"X": "1"}, "labels": {"org.shipyard.config-hash": "h1"}},
                             "gone": {"image": "i"}, "same": {"image": "i"}}}
    rendered = {"services": {"a": {"environment": {"X": "2"}, "labels": {"org.shipyard.config-hash": "h2"}},
                             "new": {"image": "i"}, "same": {"image": "i"}}}
    changes = service_changes(deployed, rendered)
    assert changes["a"] == ["environment.X: '1' -> '2'", "its config files changed"]
    assert changes["new"] == ["new service"] and changes["same"] == []
    assert changes["gone"] == ["removed from the render (its container goes)"]
    assert service_changes(None, rendered)["same"] == ["new service"]  # never deployed
    assert file_changes({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}) == ["c: new", "b: changed"]
    assert file_changes({"old": "1"}, {}) == ["old: removed"]


def test_a_failed_deploy_restores_what_it_took_down_and_only_that():
    from shipyard.plan import ObservedContainer, healthy_services, to_restore

    def c(service, status="running", health="healthy"):
        return ObservedContainer(f"p-{service}-1", service, status, health, 0, "h", "i")

    before = [c("postgres"), c("redis"), c("api", health="unhealthy"), c("worker", health=None)]
    assert healthy_services(before) == {"postgres", "redis", "worker"}
    after_failing = [c("postgres", "restarting", "unhealthy"), c("api", health="unhealthy")]
    # postgres was healthy and the deploy broke it; api was already unhealthy, nothing to go back to.
    assert to_restore(healthy_services(before), after_failing) == ["postgres"]


def test_a_changed_secret_fingerprint_names_exactly_its_readers():
    from shipyard.plan import env_changes

    variables = {"api-blue": "SHIPYARD_SECRETS_API_BLUE", "redis": "SHIPYARD_SECRETS_REDIS"}
    have = "SHIPYARD_SECRETS_API_BLUE=aaaa\nSHIPYARD_SECRETS_REDIS=bbbb\nTASKPLATFORM_BLUE=1.0\n"
    want = "SHIPYARD_SECRETS_API_BLUE=cccc\nSHIPYARD_SECRETS_REDIS=bbbb\n"
    assert env_changes(have, want, variables) == {"api-blue": ["a secret it reads at start changed"]}
    assert env_changes(None, want, variables) == {name: ["a secret it reads at start changed"] for name in variables}
    assert env_changes(want, want, variables) == {}


def test_a_container_not_made_from_the_deployed_definition_is_drift():
    from shipyard.plan import drifted, parse_config_hashes

    deployed = parse_config_hashes("node-exporter e5f4\nredis 1111\n")
    assert deployed == {"node-exporter": "e5f4", "redis": "1111"}
    found = {"node-exporter": [("shipyard-ci-node-exporter-1", "6cee")], "redis": [("shipyard-ci-redis-1", "1111")],
             "stray": [("x", "y")]}
    assert drifted(found, deployed) == {"node-exporter": [
        "shipyard-ci-node-exporter-1: not made from the deployed definition (changed outside the deploy)"]}
