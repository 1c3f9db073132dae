"""schemathesis against the API's own OpenAPI *through the edge* of the rolled-out environment
(nginx in front, as users reach it): every check, no server error, no undocumented status.
The operator endpoints the edge hides on purpose (/metrics, /v1/config) are left out. Bounded:
examples per operation and the whole run's seconds; loopback only."""

import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

from shipyard.inventory import load_environment
from tests.drill_traffic import api_client

from .conftest import REPO

MAX_SECONDS = 45


def test_the_api_through_the_edge_keeps_to_its_openapi(env_name, tmp_path):
    client = api_client(load_environment(REPO, env_name))
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")),
         "--config-file", str(REPO / "services/tests/schemathesis.toml"),
         "run", f"{client.base}/openapi.json", "--checks", "all", "--max-time", str(MAX_SECONDS),
         "--max-examples", "15", "--exclude-path-regex", "^/(metrics|v1/config)",
         "--header", f"Authorization: {client.headers['Authorization']}", "--seed", "11",
         "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml")],
        capture_output=True, text=True, timeout=MAX_SECONDS + 120, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20000:]
    suite = ElementTree.parse(tmp_path / "junit.xml").getroot()
    assert len(suite.findall(".//testcase")) >= 8, output[-5000:]
    assert not suite.findall(".//failure") and not suite.findall(".//error"), output[-20000:]
