"""Shipped by Shipyard (shipyard/components/postgres/files/): pgBackRest on a node under Patroni
(docs/data-tier.md, "Backups with pgBackRest").

    python3 pgbackrest-node.py backup [full|diff|incr]   `make pg-backup`: on the leader only;
                                                        no type: full when the repository has no
                                                        backup, incremental otherwise
    python3 pgbackrest-node.py tick                     one look of the schedule: on the leader, a
                                                        backup when the newest is older than
                                                        $PG_BACKUP_INTERVAL_S (full when the newest
                                                        full is older than $PG_BACKUP_FULL_INTERVAL_S)
    python3 pgbackrest-node.py schedule                 `tick` every $PG_BACKUP_CHECK_S s, forever
                                                        (patroni-node.sh starts it beside Patroni)
    python3 pgbackrest-node.py stanza                   the stanza, made if missing (idempotent)
    python3 pgbackrest-node.py list                     backups, oldest first: label, type, end time
    python3 pgbackrest-node.py leader                   exit 0 when this node leads (Patroni), else 1
    python3 pgbackrest-node.py flush                    on the leader: WAL switched and archived now
                                                        (pgbackrest check), before a restore
    python3 pgbackrest-node.py restore [--set L] [--until T] [POSTGRES ARGS...]
                                                        in a fresh container (as root) or directory:
                                                        the backup L (default: the newest) into an
                                                        empty $PGDATA, then PostgreSQL replaying the
                                                        archive to its end or to the time T
    python3 pgbackrest-node.py count USER DATABASE      in that restore container: "in recovery|rows
                                                        of tasks" once it answers (`make pg-restore`
                                                        polls it; the password stays inside it)

Every node runs the same loop; only the one Patroni calls the leader (GET /primary: 200 on its
REST API) acts, so backups follow a failover without anything to reconfigure. pgBackRest itself
refuses a backup from a standby, so a leader that changes mid-way cannot produce a wrong one.
Environment (set by the render): PGBACKREST_CONFIG, PGBACKREST_STANZA, PG_SUPERUSER,
PG_SUPERUSER_PASSFILE, PG_DATABASE, PATRONI_API (default http://127.0.0.1:8008), the schedule's
PG_BACKUP_*; PGHOST/PGPORT when the socket is not the default one (the tests).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import subprocess
import sys
import time
import urllib.error
import urllib.request

# Where the repository is: "local" (a volume every node mounts: the leader's loop backs up),
# "remote" (a node once the nodes span hosts: the repository's server takes the backups; the
# leader's loop records the newest one's time), "server" (that server: it backs up, pgBackRest
# finding the primary through the nodes' own servers).
REPOSITORY = os.environ.get("PG_BACKUP_REPOSITORY", "local")
NODE = os.environ.get("PATRONI_NAME") or ("the repository's server" if REPOSITORY == "server" else "this node")
API = os.environ.get("PATRONI_API", "http://127.0.0.1:8008")
TYPES = ("full", "diff", "incr")


class Refused(Exception):
    """Where, what, the fix: printed as one line, exit 1."""


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise Refused(f"{NODE}: {name} is not set (the render sets it in compose.yaml)")
    return value


def pgbackrest(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """pgBackRest with the superuser's passfile (libpq reads PGPASSFILE); the config file and
    stanza come from PGBACKREST_CONFIG / PGBACKREST_STANZA in the environment."""
    env = dict(os.environ)
    if os.environ.get("PG_SUPERUSER_PASSFILE"):  # a restore connects to no server: none there
        env["PGPASSFILE"] = os.environ["PG_SUPERUSER_PASSFILE"]
    done = subprocess.run(["pgbackrest", *args], env=env, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise failed(args, done)
    return done


def failed(args, done: subprocess.CompletedProcess) -> Refused:
    return Refused(f"{NODE}: pgbackrest {' '.join(args)} failed ({done.returncode}): "
                   f"{(done.stderr or done.stdout).strip()[-800:]}")


def is_leader() -> tuple[bool, str]:
    """(leads, Patroni's role): GET /primary answers 200 only on the node holding the leader lock."""
    try:
        with urllib.request.urlopen(f"{API}/primary", timeout=5) as reply:
            return reply.status == 200, json.loads(reply.read() or b"{}").get("role", "?")
    except urllib.error.HTTPError as error:
        try:
            return False, json.loads(error.read() or b"{}").get("role", "?")
        except ValueError:
            return False, "?"
    except OSError as error:
        return False, f"no answer from Patroni's REST API at {API} ({error})"


def require_leader(what: str) -> None:
    leads, role = is_leader()
    if not leads:
        raise Refused(f"{NODE}: not the leader ({role}); {what} runs on the leader only: `make pg-backup` finds it, "
                      "or run it in the container Patroni calls leader (make status)")


def backups() -> list[dict]:
    """The stanza's backups, oldest first ([] while the stanza does not exist)."""
    info = json.loads(pgbackrest("info", "--output=json").stdout or "[]")
    return list(info[0].get("backup", [])) if info else []


def stanza_exists() -> bool:
    """Whether the repository holds the stanza (its info, read from the repository alone). The
    repository's server makes it only when missing: stanza-create reaches every node and holds
    the archive's lock meanwhile — each look of the schedule doing so held up the new primary's
    archive-push while an unreachable node was being waited for."""
    info = json.loads(pgbackrest("info", "--output=json").stdout or "[]")
    return bool(info) and info[0].get("status", {}).get("code") != 1  # 1: missing stanza path


# pgBackRest's LockAcquireError: another pgbackrest holds the stanza's lock.
LOCK_HELD = 50


def ensure_stanza(timeout_s: float = 60) -> None:
    # Idempotent by design: an existing stanza matching this cluster is left as it is; one made
    # for another cluster (a different system identifier) makes it fail, which is what we want.
    # It takes the stanza's archive lock without waiting, which archive-push holds while it
    # ships a WAL segment (the archive_command: seen once in make test, error 50): tried again
    # until that lock is free, within timeout_s.
    deadline = time.monotonic() + timeout_s
    while (done := pgbackrest("stanza-create", check=False)).returncode == LOCK_HELD and time.monotonic() < deadline:
        time.sleep(0.5)
    if done.returncode != 0:
        raise failed(("stanza-create",), done)


def record_backup_time(finished: float) -> None:
    """shipyard_monitor.base_backup (made by the setup job in the ``postgres`` database, which the
    exporters read; not the platform's): the exporters' backup age, the newest backup's end as
    pgBackRest lists it. Never moved back; a backup that cannot say so still counts, and every
    look of the schedule says it again (the first backup, at bootstrap, ends before the setup job
    has made the table)."""
    sql = (f"INSERT INTO shipyard_monitor.base_backup VALUES (1, to_timestamp({finished:.3f})) "
           "ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at "
           "WHERE base_backup.finished_at < excluded.finished_at")
    env = {**os.environ, "PGPASSFILE": _env("PG_SUPERUSER_PASSFILE")}
    done = subprocess.run(["psql", "-XqAt", "-v", "ON_ERROR_STOP=1", "-U", _env("PG_SUPERUSER"),
                           "-d", "postgres", "-c", sql],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{NODE}: the newest backup's time could not be recorded (the backup age metric): "
              f"{done.stderr.strip()[-300:]}", file=sys.stderr)


def backup(kind: str | None) -> str:
    if REPOSITORY == "remote":
        raise Refused(f"{NODE}: the repository is a server of its own (the nodes span hosts): backups run "
                      "there, in the container pgbackrest-repo (docs/data-tier.md)")
    if REPOSITORY == "local":
        require_leader("a backup")
    if REPOSITORY == "local" or not stanza_exists():
        ensure_stanza()
    if kind is None:
        kind = "incr" if backups() else "full"
    if kind not in TYPES:
        raise Refused(f"{NODE}: backup type {kind!r}: use one of {', '.join(TYPES)}")
    started = time.monotonic()
    pgbackrest("backup", f"--type={kind}")
    took = time.monotonic() - started
    newest = backups()[-1]
    if REPOSITORY == "local":  # the server has no PostgreSQL: the leader's loop records it
        record_backup_time(newest["timestamp"]["stop"])
    fulls = sum(1 for b in backups() if b["type"] == "full")
    size = newest.get("info", {}).get("repository", {}).get("delta", 0)
    return (f"backup {newest['label']} ({newest['type']}) of {NODE} complete in {took:.1f} s "
            f"({size / 1024 / 1024:.1f} MiB written to the repository); full backups kept: {fulls}")


def tick(now: float | None = None) -> str | None:
    """One look of the schedule: the report of the backup it took, or None."""
    if REPOSITORY != "server" and not is_leader()[0]:
        return None
    if REPOSITORY == "remote":
        taken = backups()
        if taken:
            record_backup_time(taken[-1]["timestamp"]["stop"])
        return None
    now = time.time() if now is None else now
    interval = int(_env("PG_BACKUP_INTERVAL_S"))
    full_interval = int(_env("PG_BACKUP_FULL_INTERVAL_S"))
    if REPOSITORY == "local" or not stanza_exists():
        ensure_stanza()
    taken = backups()
    if taken and REPOSITORY == "local":
        record_backup_time(taken[-1]["timestamp"]["stop"])
    if taken and now - taken[-1]["timestamp"]["stop"] < interval:
        return None
    fulls = [b for b in taken if b["type"] == "full"]
    kind = "full" if not fulls or now - fulls[-1]["timestamp"]["stop"] >= full_interval else "incr"
    return backup(kind)


def schedule() -> None:
    period = int(_env("PG_BACKUP_CHECK_S"))
    while True:
        try:
            report = tick()
            if report:
                print(report, flush=True)
        except Refused as error:  # a failover mid-way, the leader still starting: the next look retries
            print(f"scheduled backup: {error}", file=sys.stderr, flush=True)
        time.sleep(period)


def become_postgres() -> None:
    """As root (`docker exec` runs as root): become postgres, so that every file pgBackRest
    writes into the repository stays the server's (archive-push runs as postgres)."""
    if os.getuid() != 0:
        return
    user = pwd.getpwnam("postgres")
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ.update(HOME=user.pw_dir, USER="postgres", LOGNAME="postgres")


def restore(args: list[str]) -> None:
    """pgbackrest restore into an empty $PGDATA, then PostgreSQL in its place: replaying the
    archive (restore_command written by pgbackrest) to its end or to --until, then promoted.
    archive_mode off: the copy must never push WAL into the repository of the cluster it came from."""
    label, until, extra = None, None, []
    while args:
        head = args.pop(0)
        if head == "--set":
            label = args.pop(0)
        elif head == "--until":
            until = args.pop(0)
        else:
            extra.append(head)
    pgdata = _env("PGDATA")
    if os.getuid() == 0:
        # A fresh volume is root's: the data directory for postgres, then this again as postgres.
        user = pwd.getpwnam("postgres")
        os.makedirs(pgdata, mode=0o700, exist_ok=True)
        for path in (os.path.dirname(pgdata), pgdata):
            os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(pgdata, 0o700)
        become_postgres()
    if not os.path.exists(os.path.join(pgdata, "PG_VERSION")):
        argv = ["restore", f"--pg1-path={pgdata}"]
        if label:
            argv.append(f"--set={label}")
        if until:
            argv += ["--type=time", f"--target={until}", "--target-action=promote"]
        started = time.monotonic()
        pgbackrest(*argv)
        print(f"restored {label or 'the newest backup'} into {pgdata} in {time.monotonic() - started:.1f} s; "
              f"replaying the archive {'to ' + until if until else 'to its end'}", flush=True)
    # hot_standby off: a read-only standby would have to match the backed-up primary's
    # max_connections & co.; it answers once recovery is over, which is when it is counted.
    os.execvp("postgres", ["postgres", "-D", pgdata, "-c", "archive_mode=off", "-c", "hot_standby=off", *extra])


def count(user: str, database: str) -> None:
    """The restored server's answer, as the database owner over TCP, its password read from the
    secret file before anything else (the container runs this as root)."""
    with open("/run/secrets/postgres_password") as secret:
        password = secret.read().strip()
    os.execvpe("psql", ["psql", "-h", "127.0.0.1", "-U", user, "-d", database, "-qtAX",
                        "-c", "SELECT pg_is_in_recovery(), count(*) FROM tasks"], {**os.environ, "PGPASSWORD": password})


def main(argv: list[str]) -> int:
    mode, rest = (argv[0], argv[1:]) if argv else ("", [])
    if mode == "count" and len(rest) == 2:
        count(*rest)
    if mode != "restore":  # restore prepares its data directory as root first
        become_postgres()
    try:
        if mode == "backup" and len(rest) <= 1:
            print(backup(rest[0] if rest else None))
        elif mode == "tick" and not rest:
            print(tick() or f"{NODE}: no backup due (or not the leader)")
        elif mode == "schedule" and not rest:
            schedule()
        elif mode == "stanza" and not rest:
            ensure_stanza()
            print(f"{NODE}: stanza {os.environ.get('PGBACKREST_STANZA')} ready")
        elif mode == "list" and not rest:
            for b in backups():
                stop = dt.datetime.fromtimestamp(b["timestamp"]["stop"], dt.timezone.utc).isoformat()
                print(f"{b['label']} {b['type']} {stop}")
        elif mode == "leader" and not rest:
            leads, role = is_leader()
            print(f"{NODE}: {'the leader' if leads else role}")
            return 0 if leads else 1
        elif mode == "flush" and not rest:
            require_leader("the archive flush")
            pgbackrest("check")
            print(f"{NODE}: WAL switched and archived")
        elif mode == "restore":
            restore(rest)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Refused as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
