"""`taskplatform db-setup`: the task platform's own PostgreSQL roles, least privilege.

Run once per deploy, before migrations, as the database's superuser (the only process that
gets its password): the migrator role owns the schema and what migrations create; the app role
(API and workers) may read and write rows, nothing else — no DDL, no superuser. The issuer role
(when its password is given: Vault's database engine connects as it) makes short-lived members of
those two and drops them: CREATEROLE, both roles WITH ADMIN OPTION, pg_signal_backend (it ends
an expired member's sessions) — never a superuser. It inherits what it is granted (PostgreSQL 15
cannot inherit pg_signal_backend alone; 16's GRANT ... WITH INHERIT FALSE could), which gives it
no more than it could take by making itself a member. Idempotent:
roles are created or have their password set again; objects created before this job existed
(owned by the superuser) are handed to the migrator; default privileges give the app role
whatever later migrations create. Like docker-elk's setup job for Elasticsearch users.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from taskplatform.secrets import SecretSource, optional
from taskplatform.settings import ProcessSettings

_OBJECTS = (("r", "TABLE"), ("p", "TABLE"), ("v", "VIEW"), ("S", "SEQUENCE"))


def _role(cur, name: str, password: str) -> None:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    # The password goes in as a literal of this statement only; it is never logged (log_statement
    # is off) and the role cannot do more than LOGIN.
    cur.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD {}").format(
        sql.SQL(verb), sql.Identifier(name), sql.Literal(password)))


def setup(settings: ProcessSettings, secrets: SecretSource) -> list[str]:
    """Create or update the roles and their privileges; returns what it did, for the log."""
    migrator, app, database = settings.pg_migrator_role, settings.pg_app_role, settings.pg_database
    hosts = ",".join(h for h, _ in settings.pg_nodes())
    ports = ",".join(str(p) for _, p in settings.pg_nodes())
    done = []
    with psycopg.connect(host=hosts, port=ports, dbname=database, user=settings.pg_admin_user,
                         password=secrets.get("postgres_admin_password"), target_session_attrs="read-write",
                         connect_timeout=int(settings.pg_connect_timeout_seconds) or 2) as conn, conn.cursor() as cur:
        _role(cur, migrator, secrets.get("migrator_password"))
        _role(cur, app, secrets.get("app_password"))
        ident = {"db": sql.Identifier(database), "migrator": sql.Identifier(migrator), "app": sql.Identifier(app)}
        for statement in (
            "GRANT CONNECT ON DATABASE {db} TO {migrator}, {app}",
            "ALTER SCHEMA public OWNER TO {migrator}",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "GRANT USAGE ON SCHEMA public TO {app}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA public "
            "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {migrator} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {app}",
        ):
            cur.execute(sql.SQL(statement).format(**ident))
        # Objects made before the roles existed (by the superuser): the migrator owns them now.
        cur.execute("SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S') "
                    "AND pg_get_userbyid(c.relowner) <> %s AND NOT (c.relkind = 'S' AND EXISTS "
                    "(SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))", (migrator,))
        for name, kind in cur.fetchall():
            keyword = dict(_OBJECTS)[kind]
            cur.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(keyword), sql.Identifier(name),
                                                                   sql.Identifier(migrator)))
            done.append(f"{keyword.lower()} {name} now owned by {migrator}")
        cur.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}").format(**ident))
        cur.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}").format(**ident))
        issuer_password = optional(secrets, "issuer_password")
        if issuer_password:
            done.append(_issuer(cur, settings.pg_issuer_role, issuer_password, ident))
    return done + [f"roles {migrator} (schema owner) and {app} (rows only) ready in {database}"]


def _issuer(cur, name: str, password: str, ident: dict) -> str:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    cur.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB CREATEROLE NOREPLICATION INHERIT PASSWORD {}").format(
        sql.SQL(verb), sql.Identifier(name), sql.Literal(password)))
    issuer = sql.Identifier(name)
    cur.execute(sql.SQL("GRANT {migrator}, {app} TO {issuer} WITH ADMIN OPTION").format(issuer=issuer, **ident))
    cur.execute(sql.SQL("GRANT pg_signal_backend TO {issuer}").format(issuer=issuer))
    cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {db} TO {issuer}").format(issuer=issuer, **ident))
    return f"role {name} may make and drop members of {ident['migrator'].as_string(cur)}, {ident['app'].as_string(cur)}"
