"""The task platform's Consul key layout, as the services define it: their own module
``services/taskplatform/consul_keys.py`` (the one place that builds these paths; the image
carries it), loaded from this checkout by its path. The render imports this, so it must not
import the services' package (and its dependencies) nor change ``sys.path``: the module is
self-contained and is loaded alone, like the runtime config schema is read from the same package
(``runtime.validate``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[3] / "services" / "taskplatform" / "consul_keys.py"

_spec = importlib.util.spec_from_file_location("_taskplatform_consul_keys", SOURCE)
if _spec is None or _spec.loader is None:
    raise ImportError(f"{SOURCE}: not a Python module")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

env_prefix = _module.env_prefix
shared_prefix = _module.shared_prefix
service_prefix = _module.service_prefix
runtime_key = _module.runtime_key
history_prefix = _module.history_prefix
history_key = _module.history_key
