"""``SHIPYARD.runtime`` (the deploy's seed of the runtime config) against the app's own model:
a key the app reads but the inventory cannot set would be dropped by the next push from it."""

import sys
from pathlib import Path

from shipyard.components.taskplatform.settings import RuntimeSettings


def test_the_inventory_can_set_every_key_of_the_apps_runtime_config():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services"))
    from taskplatform.runtime_config import RuntimeConfig

    assert set(RuntimeSettings.model_fields) == set(RuntimeConfig.model_fields)


def test_the_seed_is_accepted_by_the_app():
    from taskplatform.runtime_config import RuntimeConfig

    seed = RuntimeSettings(retention_seconds=86400, retention_seconds_by_tenant={"acme": 3600}).model_dump(mode="json")
    assert RuntimeConfig.model_validate(seed).retains()
