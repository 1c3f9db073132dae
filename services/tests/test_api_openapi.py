"""schemathesis against the API's own OpenAPI (/openapi.json), every check: no server error, no
status or content the OpenAPI does not document, schema-valid requests accepted, invalid ones
refused, unsupported methods answered 405 with Allow. Bounded: examples per operation in
schemathesis.toml, the whole run by MAX_SECONDS. Against the real API process, PostgreSQL and Redis."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_SECONDS = 60


def test_the_api_keeps_to_its_openapi(api_url, platform, tmp_path):
    token = platform.token("tenant-schemathesis")
    run = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(HERE / "schemathesis.toml"),
         "run", f"{api_url}/openapi.json", "--checks", "all", "--max-time", str(MAX_SECONDS),
         "--header", f"Authorization: Bearer {token}", "--seed", "10",
         "--report", "junit", "--report-junit-path", str(tmp_path / "junit.xml")],
        capture_output=True, text=True, timeout=MAX_SECONDS + 120, cwd=tmp_path)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20000:]
    assert "No issues found" in output or "0 failures" in output.lower() or "passed" in output.lower(), output[-5000:]
