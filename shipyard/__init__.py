"""Shipyard: declarative rollout of the task platform onto Docker hosts.

Pure core (settings, inventory, catalog, topology, render, plan, commands) imports no
pyinfra, docker or subprocess; side effects live in ``shipyard.apply``.
"""

__version__ = "0.1.0"
