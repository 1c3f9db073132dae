"""``SHIPYARD.alertmanager``: where alerts go, and how they are grouped and repeated."""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from shipyard.component import Strict

# Values land in alertmanager.yml: no quotes, spaces or backslashes, whatever the YAML writer does.
_URL = r"^https?://[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]+$"
_EMAIL = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"


class AlertmanagerSettings(Strict):
    enabled: bool = Field(True, description="run Alertmanager (false: Prometheus evaluates rules and sends nothing)")
    webhook_urls: tuple[str, ...] = Field((), description="webhook receivers of every alert and its resolution "
                                                          "(Alertmanager's webhook JSON, POSTed)")
    email_to: tuple[str, ...] = Field((), description="addresses mailed every alert (needs email_from and smarthost)")
    email_from: str | None = Field(None, pattern=_EMAIL)
    smarthost: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$", description="SMTP relay host:port")
    group_wait_s: int = Field(30, ge=0, le=3600, description="a new group of alerts waits this long for others to join")
    group_interval_s: int = Field(300, ge=1, le=86400, description="a group that changed is sent again after this")
    repeat_interval_s: int = Field(14400, ge=60, description="a group still firing is sent again after this")
    memory_limit_mb: int = Field(128, ge=32)

    @model_validator(mode="after")
    def _valid_receivers(self):
        for url in self.webhook_urls:
            if not re.match(_URL, url):
                raise ValueError(f"webhook_urls: {url!r} is not an http(s) URL; use e.g. http://alerts.internal:9000/hook")
        for address in self.email_to:
            if not re.match(_EMAIL, address):
                raise ValueError(f"email_to: {address!r} is not an email address")
        if self.email_to and not (self.email_from and self.smarthost):
            raise ValueError("email_to is set but email_from or smarthost is not; set both (the SMTP relay "
                             "host:port and the sender) or remove email_to")
        return self
