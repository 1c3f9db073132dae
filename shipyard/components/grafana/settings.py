"""``SHIPYARD.grafana``: whether Grafana runs (under the ``official`` image source only) and
its memory."""

from __future__ import annotations

from pydantic import Field

from shipyard.component import Strict


class GrafanaSettings(Strict):
    enabled: bool = Field(True, description="run Grafana where the image source gives it ('official' only: no "
                                            "Debian package of Grafana exists, so 'local' never runs it)")
    admin_user: str = Field("admin", pattern=r"^[A-Za-z0-9._-]{1,64}$",
                            description="the first admin's login (its password is the grafana_admin_password secret)")
    memory_limit_mb: int = Field(256, ge=128)
