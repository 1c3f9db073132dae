"""``SHIPYARD.vault``: the Vault-API servers (OpenBao) holding the environment's secrets, and the
limits of what the bootstrap gives each service (AppRole tokens, database credentials)."""

from __future__ import annotations

from pydantic import Field, model_validator

from shipyard.component import Strict


class AppRoleSettings(Strict):
    """Every service's AppRole (one each, least privilege)."""

    token_ttl_s: int = Field(3600, ge=60, description="a login's token lives this long unless renewed")
    token_max_ttl_s: int = Field(14400, ge=60, description="a token is never renewed past this; log in again")
    secret_id_ttl_s: int = Field(600, ge=0, description="a secret-id not used within this is refused (0: never expires)")
    secret_id_num_uses: int = Field(1, ge=0, description="logins a secret-id allows (1: single use; 0: unlimited)")

    @model_validator(mode="after")
    def _max_over_ttl(self):
        if self.token_max_ttl_s < self.token_ttl_s:
            raise ValueError(f"vault.approle.token_max_ttl_s ({self.token_max_ttl_s}) is below token_ttl_s "
                             f"({self.token_ttl_s}); raise token_max_ttl_s or lower token_ttl_s")
        return self


class DatabaseSettings(Strict):
    """The database secrets engine: PostgreSQL users made on demand, one per lease."""

    credential_ttl_s: int = Field(3600, ge=10, description="a dynamic PostgreSQL user lives this long unless renewed")
    credential_max_ttl_s: int = Field(86400, ge=10, description="a dynamic user is dropped at this age, renewed or not")

    @model_validator(mode="after")
    def _max_over_ttl(self):
        if self.credential_max_ttl_s < self.credential_ttl_s:
            raise ValueError(f"vault.database.credential_max_ttl_s ({self.credential_max_ttl_s}) is below "
                             f"credential_ttl_s ({self.credential_ttl_s}); raise the max or lower the ttl")
        return self


class VaultSettings(Strict):
    enabled: bool = Field(False, description="run the Vault servers; every deploy initialises, unseals and "
                                             "bootstraps them (docs/secrets.md, 'Vault')")
    servers: int = Field(1, ge=1, le=7, description="Vault servers (raft voters): 1, or 3/5 for a quorum that survives a loss")
    log_level: str = Field("warn", pattern=r"^(trace|debug|info|warn|error)$")
    memory_limit_mb: int = Field(256, ge=128)
    unseal_key_shares: int = Field(5, ge=1, le=10, description="unseal keys made at initialisation")
    unseal_key_threshold: int = Field(3, ge=1, le=10, description="unseal keys it takes to unseal a server")
    kv_poll_s: float = Field(300.0, ge=5, le=3600, description="how often a service that logs in reads its KV copies "
                                                                "again unasked (a deploy that wrote new ones asks at once; "
                                                                "each read is a request and an audit entry)")
    approle: AppRoleSettings = AppRoleSettings()
    database: DatabaseSettings = DatabaseSettings()

    @model_validator(mode="after")
    def _threshold(self):
        if self.unseal_key_threshold > self.unseal_key_shares:
            raise ValueError(f"vault.unseal_key_threshold ({self.unseal_key_threshold}) is above unseal_key_shares "
                             f"({self.unseal_key_shares}); no server could ever be unsealed: lower it")
        return self

    @model_validator(mode="after")
    def _odd_quorum(self):
        if self.servers % 2 == 0:
            raise ValueError(f"{self.servers} servers tolerate no more failures than {self.servers - 1}; "
                             f"set vault.servers to an odd number (1, 3 or 5)")
        return self
