"""schemathesis against the API's own OpenAPI *through the edge* of the rolled-out environment
(nginx in front, as users reach it): every check, no server error, no undocumented status.
The document the edge serves lists only what the edge serves: not the operator endpoints it hides
(/metrics, /v1/config). Bounded: examples per operation and the whole run's seconds; loopback only."""

import requests

from shipyard.inventory import load_environment
from taskplatform_testing.schemathesis_run import run_schemathesis
from tests.drill_traffic import api_client, clear_tenant

from .conftest import REPO

MAX_SECONDS = 45


def test_the_api_through_the_edge_keeps_to_its_openapi(env_name, tmp_path):
    # A tenant of its own, cleared afterwards: the run makes schedules that fire every second
    # and hundreds of 30 s `sleep` tasks, which would hold the workers for the tests after it.
    client = api_client(load_environment(REPO, env_name), tenant="schemathesis")
    paths = requests.get(f"{client.base}/openapi.json", timeout=10).json()["paths"]
    assert "/v1/tasks" in paths and not {"/metrics", "/v1/config"} & set(paths), sorted(paths)
    try:
        run = run_schemathesis(f"{client.base}/openapi.json", client.headers["Authorization"], MAX_SECONDS, tmp_path,
                               "--max-examples", "15", "--seed", "11")
    finally:
        clear_tenant(client)
    assert run.returncode == 0, run.output[-20000:]
    assert run.operations >= 8, run.output[-5000:]
    assert run.problems == 0, run.output[-20000:]
