"""The task platform: a task API and Redis Streams workers, PostgreSQL as the source of truth."""

__version__ = "0.1.0"
