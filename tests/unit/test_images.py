import io
import json
import shlex
import tarfile

from shipyard.apply.image_build import DockerImageLabels, build_argv, context_tar, image_dir_name
from shipyard.image_plan import (BASE_ID_LABEL, SOURCE_HASH_LABEL, ImageBuild, ObservedImage, normalize_ref,
                                 parse_image_inspect, plan_image_builds, refs_to_inspect)

BASE = ImageBuild(ref="shipyard/base:bookworm", context="images/base", source_hash="b1", debootstrap=True)
PG = ImageBuild(ref="shipyard/postgres:15", context="images/postgres", source_hash="p1",
                build_args={"BASE_IMAGE": "shipyard/base:bookworm"})
APP = ImageBuild(ref="shipyard/taskplatform:0.1.0", context="services", source_hash="a1",
                 build_args={"BASE_IMAGE": "python:3.11-slim-bookworm"}, wheelhouse=True)


def image(image_id, source_hash, base_id=""):
    labels = {SOURCE_HASH_LABEL: source_hash}
    if base_id:
        labels[BASE_ID_LABEL] = base_id
    return ObservedImage(id=image_id, labels=labels)


def reasons(builds, observed):
    return {p.build.ref: p.reason for p in plan_image_builds(builds, observed)}


def test_nothing_to_build_when_labels_match_and_base_unchanged():
    observed = {BASE.ref: image("sha256:b", "b1"), PG.ref: image("sha256:p", "p1", base_id="sha256:b")}
    assert plan_image_builds([BASE, PG], observed) == []


def test_missing_image_is_built():
    assert reasons([BASE, PG], {BASE.ref: image("sha256:b", "b1")}) == {PG.ref: "not on the host yet"}


def test_changed_source_hash_rebuilds_only_that_image():
    observed = {BASE.ref: image("sha256:b", "b1"), PG.ref: image("sha256:p", "old", base_id="sha256:b")}
    assert list(reasons([BASE, PG], observed)) == [PG.ref]
    assert "image has old, context is p1" in reasons([BASE, PG], observed)[PG.ref]


def test_rebuilt_base_carries_its_images_along_in_order():
    observed = {BASE.ref: image("sha256:b", "old"), PG.ref: image("sha256:p", "p1", base_id="sha256:b")}
    planned = plan_image_builds([BASE, PG], observed)
    assert [p.build.ref for p in planned] == [BASE.ref, PG.ref]
    assert planned[1].reason == f"its base {BASE.ref} is rebuilt"


def test_image_built_on_an_older_base_is_rebuilt():
    # e.g. a run that rebuilt the base and then failed before its images were rebuilt
    observed = {BASE.ref: image("sha256:new", "b1"), PG.ref: image("sha256:p", "p1", base_id="sha256:old")}
    assert reasons([BASE, PG], observed) == {PG.ref: f"its base {BASE.ref} changed since it was built"}


def test_unknown_base_id_does_not_force_a_rebuild():
    # an official base that was pulled by the build itself: no id was known to record
    observed = {APP.ref: image("sha256:a", "a1"), "python:3.11-slim-bookworm": image("sha256:py", "")}
    assert plan_image_builds([APP], observed) == []


def test_parse_inspect_output_maps_every_tag_and_skips_noise():
    lines = [
        '["shipyard/base:bookworm","shipyard/base:latest"] sha256:b {"org.shipyard.source-hash":"b1"}',
        '["shipyard/postgres:15"] sha256:p {"a":"with spaces and } braces","org.shipyard.source-hash":"p1"}',
        '["python:3.11-slim-bookworm"] sha256:py null',
        "Error: No such image: shipyard/redis:7.0",
        "",
    ]
    observed = parse_image_inspect(lines)
    assert set(observed) == {"shipyard/base:bookworm", "shipyard/base:latest", "shipyard/postgres:15",
                             "python:3.11-slim-bookworm"}
    assert observed["shipyard/postgres:15"].labels["a"] == "with spaces and } braces"
    assert observed["python:3.11-slim-bookworm"].labels == {}
    assert DockerImageLabels().process(lines) == observed


def test_fact_is_one_quoted_docker_call_for_all_refs():
    refs = refs_to_inspect([BASE, PG, APP])
    assert refs == ("python:3.11-slim-bookworm", "shipyard/base:bookworm", "shipyard/postgres:15",
                    "shipyard/taskplatform:0.1.0")
    command = DockerImageLabels().command(refs)
    argv = shlex.split(command.split(" 2>/dev/null")[0])
    assert argv[:4] == ["docker", "image", "inspect", "--format"] and argv[5:] == list(refs)
    assert DockerImageLabels.default() == {}


def test_refs_are_normalized_like_docker_lists_them():
    assert normalize_ref("nginx") == "nginx:latest"
    assert normalize_ref("mirror.example:5000/library/python") == "mirror.example:5000/library/python:latest"
    assert normalize_ref("mirror.example:5000/library/python:3.11") == "mirror.example:5000/library/python:3.11"
    assert image_dir_name("shipyard/postgres:15") == "postgres"
    assert image_dir_name("mirror.example:5000/library/python:3.11") == "python"


def test_build_commands_are_argv_with_hostile_values_kept_literal():
    hostile = ImageBuild(ref="shipyard/x:1", context="images/x", source_hash="h",
                         build_args={"BASE_IMAGE": "base; rm -rf /"})
    argv = build_argv(hostile, "/srv/build/x")
    assert argv == ["sh", "/srv/build/x/build-image.sh", "shipyard/x:1", "h", "/srv/build/x",
                    "BASE_IMAGE=base; rm -rf /"]
    assert build_argv(BASE, "/srv/build/base") == ["sh", "/srv/build/base/build.sh", BASE.ref, "b1"]
    assert build_argv(APP, "/srv/build/taskplatform")[:3] == [
        "sh", "/srv/build/taskplatform/build-image.sh", "shipyard/taskplatform:0.1.0"]


def test_context_tar_is_deterministic_and_leaves_caches_out(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "entry.sh").write_text("#!/bin/sh\n")
    (tmp_path / "entry.sh").chmod(0o755)
    for junk in ("__pycache__/m.pyc", "wheelhouse/old.whl", "pkg/.pytest_cache/x"):
        (tmp_path / junk).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / junk).write_text("junk")
    first = context_tar(tmp_path, extra={"build-image.sh": b"#!/bin/sh\n"})
    assert first == context_tar(tmp_path, extra={"build-image.sh": b"#!/bin/sh\n"})
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["Dockerfile", "build-image.sh", "entry.sh"]
    assert members["entry.sh"].mode == 0o755 and members["Dockerfile"].mtime == 0


def _settings(repo, env="ci", **overrides):
    from shipyard.inventory import load_environment

    return load_environment(repo, env, {f"SHIPYARD_{k.upper()}": v for k, v in overrides.items()})


def _needs(settings, host_name):
    from shipyard import topology

    return [(i.component, i.service.image) for i in topology.build(settings).instances_on(settings.host(host_name))]


def test_local_plan_of_this_repo_builds_base_first_and_each_base_before_its_images(repo):
    from shipyard import image_plan

    settings = _settings(repo)
    plan = image_plan.build_plan(repo, settings, _needs(settings, "ci"))
    refs = [b.ref for b in plan]
    assert refs == ["shipyard/base:bookworm", "shipyard/registry:2.8", "shipyard/postgres:15", "shipyard/postgres-patroni:latest",
                    "shipyard/postgres-exporter:0.11", "shipyard/etcd:3.4", "shipyard/redis:7.0",
                    "shipyard/redis-exporter:1.45", "shipyard/consul:1.8", "shipyard/openbao:2.7.2", "shipyard/python:3.11",
                    "shipyard/taskplatform:0.1.0", "shipyard/nginx:1.22", "shipyard/nginx-exporter:0.11",
                    "shipyard/alertmanager:0.25", "shipyard/prometheus:2.42", "shipyard/node-exporter:1.5",
                    "shipyard/logship:latest", "shipyard/logstore-osmem:0.1.6"]
    for build in plan:
        assert (repo / build.context).is_dir(), build.context
        base = build.build_args.get("BASE_IMAGE")
        assert base is None or base in refs[:refs.index(build.ref)], build.ref
    assert (repo / "images/base/build.sh").is_file() and (repo / "images/build-image.sh").is_file()
    assert json.loads(json.dumps(refs_to_inspect(plan)))  # plain strings: a pyinfra fact argument


def test_a_host_builds_only_what_its_services_run(repo):
    from shipyard import image_plan

    settings = _settings(repo, "production")
    data = [b.ref for b in image_plan.build_plan(repo, settings, _needs(settings, "data-1"))]
    # Official source: pulled, and the app image is not built on a data host; the log shipper,
    # which no registry serves, is built on every host, on the debootstrap base; PostgreSQL's
    # nodes' image (Patroni) on the pulled postgres image.
    assert data == ["shipyard/base:bookworm", "shipyard/postgres-patroni:latest", "shipyard/logship:latest"]
    assert image_plan.needs_debootstrap(settings, _needs(settings, "data-1"))
    app = image_plan.build_plan(repo, settings, _needs(settings, "app-1"))
    assert [b.ref for b in app] == ["shipyard/base:bookworm", "shipyard/taskplatform:0.1.0", "shipyard/logship:latest"]
    assert app[1].build_args == {"BASE_IMAGE": "registry.internal.example:5000/library/python:3.11-slim-bookworm"}
    assert app[2].build_args == {"BASE_IMAGE": "shipyard/base:bookworm"}


def test_the_app_image_hash_covers_only_what_goes_into_the_image(repo, tmp_path):
    import shutil

    from shipyard import image_plan

    services = tmp_path / "services"
    shutil.copytree(repo / "services", services, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    include = ("Dockerfile", "pyproject.toml", "requirements.txt", "taskplatform")
    before = image_plan.hash_tree(services, "base", include=include)
    (services / "tests" / "test_api.py").write_text("# edited test\n")
    (services / "README.md").write_text("edited\n")
    assert image_plan.hash_tree(services, "base", include=include) == before
    (services / "taskplatform" / "api.py").write_text("# edited code\n")
    assert image_plan.hash_tree(services, "base", include=include) != before


def test_the_wheelhouse_is_fetched_for_the_images_python_whatever_runs_the_deploy(tmp_path):
    from shipyard import image_plan

    argv = image_plan.wheelhouse_argv("/usr/bin/python3.13", tmp_path / "req.txt", tmp_path / "wh", "x86_64")
    assert argv[:4] == ["/usr/bin/python3.13", "-m", "pip", "download"]
    assert "--only-binary=:all:" in argv
    assert argv[argv.index("--python-version") + 1] == "3.11" and "cp311" in argv
    assert "manylinux_2_17_x86_64" in argv


def test_only_the_official_source_pulls_and_only_what_the_host_runs(repo):
    from shipyard import image_plan

    local = _settings(repo)
    assert image_plan.images_to_pull(local, _needs(local, "ci")) == []
    prod = _settings(repo, "production")
    # Every host: the node exporter and cAdvisor (official images only), and a Prometheus of
    # its own on each host but obs-1 (which runs the environment's).
    per_host = ["registry.internal.example:5000/gcr.io/cadvisor/cadvisor:v0.47.2",
                "registry.internal.example:5000/prom/node-exporter:v1.5.0",
                "registry.internal.example:5000/prom/prometheus:v2.42.0"]
    assert image_plan.images_to_pull(prod, _needs(prod, "edge-1")) == sorted(per_host + [
        "registry.internal.example:5000/library/nginx:1.22.1",
        "registry.internal.example:5000/nginx/nginx-prometheus-exporter:0.11.0"])
    assert image_plan.images_to_pull(prod, _needs(prod, "app-1")) == sorted(per_host + [
        "registry.internal.example:5000/hashicorp/consul:1.20.2",  # a Consul server per control host
        "registry.internal.example:5000/library/python:3.11-slim-bookworm",
        "registry.internal.example:5000/library/redis:7.0.15-bookworm",  # a Redis Sentinel
        "registry.internal.example:5000/oliver006/redis_exporter:v1.45.0",  # and its exporter
        "registry.internal.example:5000/openbao/openbao:2.7.2",  # and a Vault server
        "registry.internal.example:5000/quay.io/coreos/etcd:v3.4.23"])  # and an etcd member
    assert image_plan.images_to_pull(prod, _needs(prod, "data-1")) == sorted(per_host + [
        "registry.internal.example:5000/hashicorp/consul:1.20.2",
        "registry.internal.example:5000/library/postgres:15.10-bookworm",
        "registry.internal.example:5000/library/redis:7.0.15-bookworm",
        "registry.internal.example:5000/oliver006/redis_exporter:v1.45.0",
        "registry.internal.example:5000/openbao/openbao:2.7.2",
        "registry.internal.example:5000/prometheuscommunity/postgres-exporter:v0.11.1",
        "registry.internal.example:5000/quay.io/coreos/etcd:v3.4.23"])  # etcd, Patroni's DCS, per control host
