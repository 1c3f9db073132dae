"""Each process reports the runtime config it applied in a file of its own: the deploy reads
them all (the API's processes share one port, so asking over HTTP reaches one)."""

from __future__ import annotations

import json
import os
import time

from taskplatform.config_report import ConfigReport
from taskplatform.runtime_config import FileConfigSource
from taskplatform_testing.servers import write_config


def test_the_report_follows_the_applied_config_and_the_rejections(tmp_path):
    config = tmp_path / "runtime.json"
    write_config(config, version="1")
    source = FileConfigSource(config)
    source.load_initial()
    report = ConfigReport(source, tmp_path / "state", "api")
    source.subscribe(lambda _loaded: report.write())
    report.write()
    state = json.loads((tmp_path / "state" / f"{os.getpid()}.json").read_text())
    assert state["version"] == "1" and state["role"] == "api" and state["rejected"] is None
    write_config(config, version="2", maintenance=True, enabled_kinds=["fail", "checksum"])
    source.poll_once()
    state = json.loads(report.path.read_text())  # written on apply, not at the next tick
    assert state["version"] == "2" and state["maintenance"] is True and state["enabled_kinds"] == ["checksum", "fail"]
    write_config(config, version="3", worker_concurrency=0)
    source.poll_once()
    report.write()
    state = json.loads(report.path.read_text())
    assert state["version"] == "2" and "worker_concurrency" in state["rejected"]["reason"]
    assert time.time() - state["at"] < 60
    report.remove()
    assert not report.path.exists()


def test_a_key_only_a_newer_release_knows_is_ignored_here_but_refused_by_the_deploy(tmp_path):
    import pytest

    from taskplatform.runtime_config import ConfigRejected, validate_document
    from taskplatform_testing.servers import RUNTIME_DEFAULTS

    config = tmp_path / "runtime.json"
    write_config(config, version="1")
    source = FileConfigSource(config)
    source.load_initial()
    write_config(config, version="2", worker_concurrency=7, feature_of_v2=True)
    source.poll_once()
    assert source.config.version == "2" and source.config.worker_concurrency == 7
    assert source.current().ignored == ("feature_of_v2",)
    with pytest.raises(ConfigRejected, match="unknown keys \\['feature_of_v2'\\]"):
        validate_document(dict(RUNTIME_DEFAULTS, feature_of_v2=True))
    assert validate_document(dict(RUNTIME_DEFAULTS)).version == RUNTIME_DEFAULTS["version"]
