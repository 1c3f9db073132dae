"""schemathesis against the API's own OpenAPI (/openapi.json), every check: no server error, no
status or content the OpenAPI does not document, schema-valid requests accepted, invalid ones
refused, unsupported methods answered 405 with Allow. Bounded: examples per operation in
schemathesis.toml, the whole run by MAX_SECONDS. Against a real API process, PostgreSQL and Redis of its own."""

import pytest

from taskplatform_testing.schemathesis_run import run_schemathesis
from taskplatform_testing.servers import start_platform

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
    run = run_schemathesis(f"{api_url}/openapi.json", f"Bearer {platform.token('tenant-schemathesis')}",
                           MAX_SECONDS, tmp_path, "--seed", "10")
    assert run.returncode == 0, run.output[-20000:]
    # It ran every operation of the OpenAPI, and every check held (not_a_server_error: 0 server
    # errors; status_code_conformance: 0 undocumented statuses; and the rest).
    assert run.operations >= 10, run.output[-5000:]
    assert run.problems == 0, run.output[-20000:]
