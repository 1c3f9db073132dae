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
