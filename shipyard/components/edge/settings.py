"""``SHIPYARD.edge``: the edge's TLS — where its certificate comes from, what it names, and what
its plain HTTP port does (docs/security.md, "TLS at the edge")."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shipyard.component import Strict
from shipyard.tls import is_ip_address

# A DNS name a certificate may hold: labels of letters, digits and hyphens, a leading "*." for a
# wildcard. No IP addresses: users reach the edge by name (HSTS is per name too).
_NAME = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
# Mozilla's recommended HSTS max-age (two years); at least a day, or it protects nothing.
HSTS_DEFAULT_S = 63072000


class EdgeTlsSettings(Strict):
    """How the edge serves HTTPS on ``ports.edge_https``."""

    mode: Literal["off", "ca", "files"] = Field(
        "off", description="'off': plain HTTP only; 'ca': a certificate for `names` issued by the environment's own "
                           "edge CA (held in secrets/<env>/, re-issued by a deploy when the names change or within "
                           "30 days of expiry); 'files': your own chain (`chain_file`) and key (the secret "
                           "edge_tls_key: `make secrets-put ENV=.. NAME=edge_tls_key FILE=..`)")
    names: tuple[str, ...] = Field((), description="DNS names (or IP addresses) the certificate holds (mode 'ca'; "
                                                   "the first is its subject); users reach the edge by these")
    chain_file: str | None = Field(None, description="mode 'files': path in the checkout of the PEM chain — the "
                                                     "server certificate first, then its intermediates (what an "
                                                     "ACME client writes as fullchain.pem)")
    http: Literal["redirect", "serve"] | None = Field(
        None, description="plain HTTP on ports.edge_http: 'redirect' (the default with TLS on) answers 308 to the "
                          "same URL over HTTPS; 'serve' serves it as well (loopback-only test environments)")
    hsts_max_age_s: int = Field(HSTS_DEFAULT_S, ge=86400, le=HSTS_DEFAULT_S * 2,
                                description="Strict-Transport-Security max-age on HTTPS answers (Mozilla: two years)")

    @field_validator("names")
    @classmethod
    def _dns_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [n for n in value if not _NAME.match(n) or len(n) > 253]
        if bad:
            raise ValueError(f"edge.tls.names: {', '.join(map(repr, bad))} is not a DNS name (lower case letters, "
                             f"digits, hyphens and dots; '*.' for a wildcard); list the names users reach the edge by")
        if len(set(value)) != len(value):
            raise ValueError("edge.tls.names: a name is listed twice; list each once")
        return value

    @property
    def dns_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if not is_ip_address(n))

    @property
    def addresses(self) -> tuple[str, ...]:
        """Names that are IP addresses: the certificate holds them as IP addresses, which is what a
        client reaching the edge by address checks (a DNS name "10.0.0.1" matches nothing)."""
        return tuple(n for n in self.names if is_ip_address(n))

    @model_validator(mode="after")
    def _mode_needs(self):
        if self.mode == "ca" and not self.names:
            raise ValueError("edge.tls.names is empty with edge.tls.mode 'ca': the certificate would name nothing; "
                             "list the DNS names users reach the edge by (\"names\": [\"api.example.net\"])")
        if self.mode == "files" and not self.chain_file:
            raise ValueError("edge.tls.chain_file is not set with edge.tls.mode 'files'; set it to the path in the "
                             "checkout of your PEM chain (server certificate first, then intermediates)")
        if self.mode != "files" and self.chain_file:
            raise ValueError(f"edge.tls.chain_file is set but edge.tls.mode is {self.mode!r}, which does not read "
                             f"it; set mode 'files' or remove chain_file")
        if self.mode == "off" and self.http == "redirect":
            raise ValueError("edge.tls.http is 'redirect' but edge.tls.mode is 'off': there is no HTTPS to redirect "
                             "to; set a mode ('ca' or 'files') or remove http")
        return self

    @property
    def on(self) -> bool:
        return self.mode != "off"

    @property
    def redirects(self) -> bool:
        """Plain HTTP answers 308 to HTTPS (everything but the edge's own health path)."""
        return self.on and self.http != "serve"


class EdgeSettings(Strict):
    tls: EdgeTlsSettings = EdgeTlsSettings()
