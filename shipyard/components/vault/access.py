"""What the environment's Vault must hold, from the settings and the topology. Pure.

- KV v2 at ``secret/``: each service's secrets under ``secret/services/<service>/`` (a copy per
  service, as the files are today: one service's path holds only what it reads);
- AppRole auth at ``approle/``: one role per service that reads secrets, each bound to its own
  policy only, with the TTLs and secret-id limits of ``vault.approle``;
- the database secrets engine at ``database/``: one connection to the environment's PostgreSQL
  (as the platform's issuer role, which db-setup makes: CREATEROLE, never a superuser) and one
  role per application role the services connect as, whose users are
  made on demand as members of that role (the privileges ``db-setup`` grants it) and dropped
  when their lease ends;
- one policy per service: read of its own KV path, and credentials of its own database role;
- the deployer: the AppRole the deploying machine logs in with to bootstrap (no root token lives
  between deploys), whose policy reaches the paths the bootstrap writes and nothing else — not
  the seal, not root token generation, not another service's database credentials.

The bootstrap (bootstrap.py) writes this into a server and reports what it changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from shipyard import topology
from shipyard.components.vault import LOG_IN, kv_path, role_id

KV_MOUNT = "secret"
APPROLE_MOUNT = "approle"
DATABASE_MOUNT = "database"
DATABASE_CONNECTION = "postgres"
# The deployer's own records (the database connection's password fingerprint: the server never
# reads a password back, so this is how a rotated one is noticed).
DEPLOY_RECORDS = "shipyard-deploy"
# The services that connect to PostgreSQL read their role's password as ``postgres_password``
# (the task platform's convention): under Vault that role's users come from the database engine.
_CONNECTS_AS = "postgres_password"


@dataclass(frozen=True)
class DatabaseRole:
    """A database engine role: users made on demand as members of ``group`` (a PostgreSQL role)."""

    name: str
    group: str
    ttl_s: int
    max_ttl_s: int

    @property
    def creation_statements(self) -> tuple[str, ...]:
        # INHERIT + IN ROLE: the user holds exactly the group's privileges. SET role: what it
        # creates (a migration's tables) is owned by the group, not by a user about to be dropped.
        # Granted to the connection's own role (the issuer, not a superuser): revocation's
        # REASSIGN and DROP OWNED need the privileges of the user they clear.
        return (f'CREATE ROLE "{{{{name}}}}" WITH LOGIN PASSWORD \'{{{{password}}}}\' VALID UNTIL \'{{{{expiration}}}}\' '
                f'NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION INHERIT IN ROLE "{self.group}";',
                f'ALTER ROLE "{{{{name}}}}" SET role = \'{self.group}\';',
                'GRANT "{{name}}" TO CURRENT_USER;')

    @property
    def revocation_statements(self) -> tuple[str, ...]:
        # An ended lease ends the user's sessions too: an expired credential serves nothing.
        return ('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = \'{{name}}\';',
                f'REASSIGN OWNED BY "{{{{name}}}}" TO "{self.group}";',
                'DROP OWNED BY "{{name}}";',
                'DROP ROLE IF EXISTS "{{name}}";')


@dataclass(frozen=True)
class ServiceAccess:
    """What one service (all its instances and colours) may read."""

    service: str
    # (name under its KV path, stored secret): its copy of each secret it reads, named as the
    # service asks for it (its file's name), so the copy and the file are one and the same to it.
    secrets: tuple[tuple[str, str], ...]
    database_role: str | None = None

    @property
    def policy(self) -> str:
        return f"service-{self.service}"

    @property
    def kv_path(self) -> str:
        return kv_path(self.service)

    def policy_hcl(self) -> str:
        rules = [f'path "{KV_MOUNT}/data/{self.kv_path}/*" {{\n  capabilities = ["read"]\n}}\n',
                 f'path "{KV_MOUNT}/metadata/{self.kv_path}/*" {{\n  capabilities = ["read", "list"]\n}}\n']
        if self.database_role:
            rules.append(f'path "{DATABASE_MOUNT}/creds/{self.database_role}" {{\n  capabilities = ["read"]\n}}\n')
        return f"# Shipyard: what {self.service} may read, and nothing else.\n" + "".join(rules)


@dataclass(frozen=True)
class AppRole:
    service: str
    policy: str
    token_ttl_s: int
    token_max_ttl_s: int
    secret_id_ttl_s: int
    secret_id_num_uses: int
    token_period_s: int = 0  # 0: not periodic

    @property
    def role_id(self) -> str:
        return role_id(self.service)

    def params(self) -> dict:
        """The role's fields as Vault reads them back (the bootstrap compares these)."""
        return {"token_policies": [self.policy], "token_ttl": self.token_ttl_s, "token_max_ttl": self.token_max_ttl_s,
                "token_period": self.token_period_s, "secret_id_ttl": self.secret_id_ttl_s,
                "secret_id_num_uses": self.secret_id_num_uses, "bind_secret_id": True}


DEPLOYER = "shipyard-deployer"
# What the bootstrap (bootstrap.py) reads and writes; sudo where the API asks for it (listing
# audit devices and token accessors, enabling an auth method).
_DEPLOYER_RULES = (
    ("sys/mounts", ("read",)),
    ("sys/mounts/*", ("create", "read", "update")),
    ("sys/auth", ("read",)),
    ("sys/auth/*", ("create", "read", "update", "sudo")),
    ("sys/audit", ("read", "sudo")),
    ("sys/policies/acl/*", ("create", "read", "update")),
    (f"auth/{APPROLE_MOUNT}/role/*", ("create", "read", "update", "list")),
    (f"{DATABASE_MOUNT}/config/*", ("create", "read", "update")),
    (f"{DATABASE_MOUNT}/roles/*", ("create", "read", "update")),
    (f"{KV_MOUNT}/data/services/*", ("create", "read", "update")),
    # delete: a copy a service no longer reads goes (sync_secrets).
    (f"{KV_MOUNT}/metadata/services/*", ("read", "list", "delete")),
    (f"{KV_MOUNT}/data/shipyard-ready-probe", ("read",)),
    (f"{KV_MOUNT}/data/{DEPLOY_RECORDS}/*", ("create", "read", "update")),
    # A root token an interrupted first run left behind is found and revoked.
    ("auth/token/accessors", ("list", "sudo")),
    ("auth/token/lookup-accessor", ("update",)),
    ("auth/token/revoke-accessor", ("update",)),
)


def deployer_policy_hcl() -> str:
    rules = []
    for path, capabilities in _DEPLOYER_RULES:
        listed = ", ".join(f'"{c}"' for c in capabilities)
        rules.append(f'path "{path}" {{\n  capabilities = [{listed}]\n}}\n')
    return "# Shipyard: the deploy's bootstrap, and nothing else.\n" + "".join(rules)


@dataclass(frozen=True)
class Desired:
    services: tuple[ServiceAccess, ...]
    approles: tuple[AppRole, ...]
    database_roles: tuple[DatabaseRole, ...]
    database_hosts: tuple[str, ...]  # host:port of every PostgreSQL node, as Vault reaches them
    database_name: str
    database_admin: str  # the role Vault connects as: the platform's issuer (its password: pg_issuer_password)
    deployer: AppRole  # the deploying machine's own


def _database_roles(settings) -> dict[str, str]:
    """Stored secret → the PostgreSQL role whose password it is (the task platform's roles)."""
    return {"pg_app_password": settings.app.db_app_role, "pg_migrator_password": settings.app.db_migrator_role}


def _kv_name(file) -> str:
    """A file rendered from its value (Redis's include) is copied as the raw value, by its
    stored name; any other as the service reads it."""
    return file.secret if file.template else file.target


def service_access(settings) -> tuple[ServiceAccess, ...]:
    """One entry per service of the topology that reads secrets (its instances and colours share
    it): its files and what Vault serves it (SecretFile.served) alike."""
    roles = _database_roles(settings)
    found: dict[str, ServiceAccess] = {}
    for inst in topology.build(settings).instances:
        svc = inst.service
        files = inst.secrets + svc.served_secrets(settings)
        # Vault's own servers read their TLS bundle as a file: they are not Vault's clients.
        if not files or svc.name in found or inst.component.name == "vault":
            continue
        connects = [s.secret for s in files if s.target == _CONNECTS_AS and s.secret in roles]
        # A served role password gets no copy: the service's users come from the database engine.
        dynamic = {s for s in svc.served_secrets(settings) if s.target == _CONNECTS_AS and s.secret in roles}
        copies = {(_kv_name(s), s.secret) for s in files if s not in dynamic}
        found[svc.name] = ServiceAccess(svc.name, tuple(sorted(copies)), roles[connects[0]] if connects else None)
    return tuple(found[name] for name in sorted(found))


def desired(settings, database_hosts: tuple[str, ...]) -> Desired:
    """The whole of it. ``database_hosts``: the PostgreSQL nodes as the Vault servers reach them
    (the topology's, from a Vault host; the tests': their own server)."""
    vault = settings.vault
    app = vault.approle
    services = service_access(settings)
    # The services that log in at run time get periodic tokens: renewed for as long as the
    # process lives (its wrapped secret-id logs in once), gone a period after it stopped renewing.
    logging_in = {service for _, service in LOG_IN}
    approles = tuple(AppRole(s.service, s.policy, app.token_ttl_s, app.token_max_ttl_s, app.secret_id_ttl_s,
                             app.secret_id_num_uses, app.token_ttl_s if s.service in logging_in else 0)
                     for s in services)
    groups = sorted({s.database_role for s in services if s.database_role})
    database_roles = tuple(DatabaseRole(g, g, vault.database.credential_ttl_s, vault.database.credential_max_ttl_s)
                           for g in groups)
    # The deployer's secret-id lives on the deploying machine (age-encrypted, like the unseal
    # keys) and is used by every deploy: no TTL, no use limit; its tokens are short.
    deployer = AppRole(DEPLOYER, DEPLOYER, 900, 1800, 0, 0)
    return Desired(services, approles, database_roles, tuple(database_hosts), settings.postgres.database,
                   settings.app.db_issuer_role, deployer)


def database_hosts(settings) -> tuple[str, ...]:
    """Every PostgreSQL node as the first Vault server's host reaches it."""
    top = topology.build(settings)
    servers = top.instances_of("vault", "vault")
    if not servers:
        return ()
    return tuple(str(e) for svc in ("postgres", "postgres-replica") for e in top.endpoints("postgres", svc, servers[0].host))
