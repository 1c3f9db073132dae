"""The task kind ``smoke``, the platform's own: a release's smoke test (``taskplatform smoke``,
``taskplatform/release_smoke.py``) creates one through the new colour and checks who ran it.
Declared here, apart from the test that uses it, because every API and worker loads this module
(kinds.PLATFORM_MODULES, whatever TASKS_KINDS_PACKAGES says) and the test's HTTP client is not
theirs to import."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from taskplatform.kinds import TaskContext, kind


class SmokePayload(BaseModel):
    """Nothing: a smoke task only says who ran it."""
    model_config = ConfigDict(extra="forbid", strict=True)


@kind("smoke", payload=SmokePayload)
async def run_smoke(payload: SmokePayload, context: TaskContext) -> dict:
    """The release's smoke test: which colour, version and worker took it."""
    return dict(context.runner)
