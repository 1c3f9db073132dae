"""schemathesis against the API's own OpenAPI (/openapi.json), every check: no server error, no
status or content the OpenAPI does not document, schema-valid requests accepted, invalid ones
refused, unsupported methods answered 405 with Allow. Bounded: examples per operation in
schemathesis.toml, the whole run by MAX_SECONDS. Against a real API process, PostgreSQL and Redis of its own."""

import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from taskplatform_testing.servers import start_platform

HERE = Path(__file__).resolve().parent
MAX_SECONDS = 60


@pytest.fixture(scope="module")
def own_platform():
    """A PostgreSQL, Redis and API of its own: the thousands of tasks schemathesis creates
    (sleeps of up to 30 s among them) must not queue ahead of other tests' tasks."""
    started = start_platform()
    try:
        yield started, started.start_api(processes=2)
    finally:
        started.stop()


def test_the_api_keeps_to_its_openapi(own_platform, tmp_path):
    platform, api_url = own_platform
    token = platform.token("tenant-schemathesis")
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(HERE / "schemathesis.toml"),
         "run", f"{api_url}/openapi.json", "--checks", "all", "--max-time", str(MAX_SECONDS),
         "--header", f"Authorization: Bearer {token}", "--seed", "10",
         "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml")],
        capture_output=True, text=True, timeout=MAX_SECONDS + 120, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20000:]
    # It ran, and every check held (not_a_server_error: 0 server errors; status_code_conformance:
    # 0 undocumented statuses; and the rest).
    suite = ElementTree.parse(tmp_path / "junit.xml").getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) >= 10, output[-5000:]  # every operation of the OpenAPI
    assert not suite.findall(".//failure") and not suite.findall(".//error"), output[-20000:]
