"""Test and benchmark helpers (not shipped in the image): real PostgreSQL and Redis servers
and the platform's own processes, started on loopback for one run."""
