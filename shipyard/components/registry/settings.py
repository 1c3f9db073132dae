"""``SHIPYARD.registry``: the environment's private image registry (docs/registry.md). Off by default: a single-host environment builds its images on its host. Its host is
the inventory's ``registry`` group (one host); its port is ``ports.registry``."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from shipyard.component import Strict
from shipyard.tls import is_ip_address

# A DNS name (letters, digits, hyphens, dots; no wildcard: a registry is reached by one name).
_DNS = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class RegistrySettings(Strict):
    enabled: bool = Field(False, description="run a private image registry on the `registry` host: images are built "
                                             "once, pushed there and pulled by the hosts that run them (false: each "
                                             "host builds or pulls its own)")
    names: tuple[str, ...] = Field((), description="DNS names and IP addresses its certificate holds; the first is how "
                                                   "every host's engine reaches it (image references, docker login)")
    allow_delete: bool = Field(False, description="accept DELETE of manifests and blobs (storage.delete.enabled), for "
                                                  "an operator's clean-up before an offline garbage-collect")
    upload_purge_age_h: int = Field(168, ge=1, le=8760, description="unfinished uploads older than this are removed "
                                                                     "(storage.maintenance.uploadpurging)")
    memory_limit_mb: int = Field(256, ge=64)

    @field_validator("names")
    @classmethod
    def _names_or_addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [n for n in value if not (is_ip_address(n) or (_DNS.match(n) and len(n) <= 253))]
        if bad:
            raise ValueError(f"registry.names: {', '.join(map(repr, bad))} is neither a DNS name nor an IP address; "
                             f"list the names (lower case) or addresses the hosts reach the registry by")
        if len(set(value)) != len(value):
            raise ValueError("registry.names: a name is listed twice; list each once")
        return value

    @model_validator(mode="after")
    def _named_when_enabled(self):
        if self.enabled and not self.names:
            raise ValueError("registry.names is empty with registry.enabled: its certificate would name nothing and the "
                             "hosts would have no name to pull from; list the name or address the hosts reach it by "
                             "(\"names\": [\"registry.internal.example\"] or the registry host's address)")
        return self

    @property
    def dns_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if not is_ip_address(n))

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if is_ip_address(n))
