"""One bounded schemathesis run against an OpenAPI (the API directly, or through the edge):
every check, a JUnit report read back so a run that tested nothing cannot pass."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

CONFIG = Path(__file__).resolve().parents[1] / "tests" / "schemathesis.toml"


@dataclass
class SchemathesisRun:
    returncode: int
    output: str
    operations: int  # JUnit test cases: one per operation it ran
    problems: int  # failures + errors


def run_schemathesis(openapi_url: str, authorization: str, max_seconds: int, workdir: Path,
                     *extra: str) -> SchemathesisRun:
    report = workdir / "junit.xml"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONFIG),
         "run", openapi_url, "--checks", "all", "--max-time", str(max_seconds),
         "--header", f"Authorization: {authorization}", *extra,
         "--report", "junit", "--report-junit-path", str(report)],
        capture_output=True, text=True, timeout=max_seconds + 120, cwd=workdir)
    suite = ElementTree.parse(report).getroot() if report.exists() else ElementTree.Element("none")
    return SchemathesisRun(done.returncode, done.stdout + done.stderr, len(suite.findall(".//testcase")),
                           len(suite.findall(".//failure")) + len(suite.findall(".//error")))
