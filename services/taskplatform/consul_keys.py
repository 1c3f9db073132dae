"""Where the task platform's keys live in Consul KV: the one place that builds their paths.

    shipyard/<env>/                  the environment's prefix
    shipyard/<env>/shared/           read by every service of the platform
    shipyard/<env>/shared/runtime    the runtime config document (``taskplatform.consul_config``)
    shipyard/<env>/<service>/        read by that service alone (its ACL policy: ``consulsetup``)
    shipyard/<env>/history/<n>       one entry per runtime config version, ``n`` zero-padded to 8
                                     digits so that keys sort by version (`make config-history`)

The image carries this module with the rest of the package; Shipyard reads the same file from
its checkout (``shipyard.components.taskplatform.consul_keys``), so the deploy tooling and the
services cannot disagree. Pure and self-contained: it imports nothing, not even the package.
"""

from __future__ import annotations

ROOT = "shipyard"
SHARED = "shared"
RUNTIME = "runtime"
HISTORY = "history"


def env_prefix(env: str) -> str:
    return f"{ROOT}/{env}/"


def shared_prefix(env: str) -> str:
    return f"{env_prefix(env)}{SHARED}/"


def service_prefix(env: str, service: str) -> str:
    return f"{env_prefix(env)}{service}/"


def runtime_key(env: str) -> str:
    return f"{shared_prefix(env)}{RUNTIME}"


def history_prefix(env: str) -> str:
    return f"{env_prefix(env)}{HISTORY}/"


def history_key(env: str, version: int | str) -> str:
    return f"{history_prefix(env)}{int(version):08d}"
