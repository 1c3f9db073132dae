"""Operator drills on @local environments, behind the Makefile: Redis failover
(``redis``), PostgreSQL backups and restores (``pg_backups``), PostgreSQL promotion and
rebuild (``pg_promote``). Side effects (docker CLI); the argv come from shipyard.commands."""
