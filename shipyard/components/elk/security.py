"""Who may do what in Elasticsearch (official image source): the roles and users the setup job
(templates/logs-setup/setup.sh.j2) puts into the store at every run, and each user's password
secret. Pure data: the request bodies of the security API, checked by tests/unit/test_elk.py
against the documented shapes.

- ``elastic``: the built-in superuser. Its first password is the bootstrap password the image
  reads from ``ELASTIC_PASSWORD_FILE``; from then on the store keeps its own, so the setup job
  sets it (and every other) at each run: a rotated secret is applied even though the data
  volume exists. The setup job logs in with it (and, during a rotation, with the value it
  replaces) and nothing else does.
- ``kibana_system``: the built-in user Kibana connects as (its password only: a built-in user's
  roles are fixed).
- ``logship``: the shippers' writer — create the daily indices and index documents in them, on
  this environment's log indices and nothing else (no cluster privilege: the shipper's
  health check needs none, it only checks that the store answers).
- ``logs_reader``: reads this environment's log indices (`make trace`, an operator's queries).
- ``logstash_writer`` (``logs.logstash.enabled``): Logstash's writer — the same index
  privileges as the shippers', and ``monitor`` (its Elasticsearch output reads the cluster's
  version and health before it writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard.components.elk import documents

ELASTIC = "elastic"
KIBANA_SYSTEM = "kibana_system"
# Index privileges of a writer: create the day's index, index (and re-index: a line shipped
# twice has the same id) documents. https://www.elastic.co/guide/en/elasticsearch/reference/8.17/security-privileges.html
WRITE = ("create_index", "create_doc", "index")
READ = ("read", "view_index_metadata")  # searches, and the mappings (make verify)


@dataclass(frozen=True)
class User:
    name: str
    secret: str  # the stored secret holding its password
    role: str | None  # None: a built-in user (its password is all we set)
    description: str


def roles(env: str, logstash: bool) -> dict[str, dict[str, Any]]:
    """role name → the body of ``PUT _security/role/<name>`` (cluster and index privileges)."""
    pattern = documents.index_pattern(env)
    found = {
        "shipyard_logship": {"cluster": [], "indices": [{"names": [pattern], "privileges": list(WRITE)}],
                             "metadata": {"managed_by": "shipyard"}},
        "shipyard_logs_reader": {"cluster": [], "indices": [{"names": [pattern], "privileges": list(READ)}],
                                 "metadata": {"managed_by": "shipyard"}},
    }
    if logstash:
        found["shipyard_logstash_writer"] = {"cluster": ["monitor"],
                                             "indices": [{"names": [pattern], "privileges": list(WRITE)}],
                                             "metadata": {"managed_by": "shipyard"}}
    return found


def users(logstash: bool) -> tuple[User, ...]:
    """Every user whose password the setup job sets, ``elastic`` first (it logs in as it)."""
    found = [User(ELASTIC, "elastic_password", None, "the built-in superuser (the setup job only)"),
             User(KIBANA_SYSTEM, "kibana_system_password", None, "the built-in user Kibana connects as"),
             User("logship", "logship_password", "shipyard_logship", "the log shippers (write only)"),
             User("logs_reader", "logs_reader_password", "shipyard_logs_reader", "reads the logs (make trace)")]
    if logstash:
        found.append(User("logstash_writer", "logstash_writer_password", "shipyard_logstash_writer",
                          "Logstash's Elasticsearch output (write only)"))
    return tuple(found)


PASSWORD_SLOT = "%s"


def user_body(user: User) -> str:
    """The body of ``PUT _security/user/<name>`` (a native user) or ``POST
    _security/user/<name>/_password`` (a built-in one), as a printf format whose one ``%s`` is
    the password: the setup job fills it from the secret file with the shell's own printf, so
    the value is in no argument of any process."""
    import json

    if user.role is None:
        body: dict[str, Any] = {"password": PASSWORD_SLOT}
    else:
        body = {"password": PASSWORD_SLOT, "roles": [user.role], "full_name": user.description,
                "metadata": {"managed_by": "shipyard"}, "enabled": True}
    text = json.dumps(body, sort_keys=True)
    # printf reads % and \ itself: the body has none but the password's slot.
    if text.count("%") != 1 or "\\" in text:
        raise ValueError(f"the body of user {user.name} has a % or \\ of its own: printf would read it")
    return text
