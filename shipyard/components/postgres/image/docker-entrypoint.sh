#!/usr/bin/env bash
# Entrypoint of shipyard/postgres:15. Same contract as the official postgres image's
# entrypoint (written for Shipyard, not copied):
#
#   POSTGRES_PASSWORD / POSTGRES_PASSWORD_FILE  superuser password (a *_FILE is read as root)
#   POSTGRES_USER (default postgres), POSTGRES_DB (default $POSTGRES_USER)
#   POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD
#     (default scram-sha-256 when a password is set; without a password only "trust" starts)
#   PGDATA (default /var/lib/postgresql/data)
#   /docker-entrypoint-initdb.d/*.sh, *.sql, *.sql.gz run once, on an empty data directory,
#   against a temporary server that listens only on the unix socket.
#
# Started as root, it creates and chowns the data and socket directories, then re-executes
# itself as postgres (uid 999). Finally it execs `postgres "$@"`, so postgres is PID 1.
set -Eeo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# VAR or VAR_FILE (not both) → VAR, exported; VAR_FILE is unset afterwards.
file_env() {
	local var=$1 file_var="${1}_FILE" default=${2:-}
	if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
		die "both $var and $file_var are set; they are mutually exclusive"
	fi
	local value=$default
	if [ -n "${!var:-}" ]; then
		value=${!var}
	elif [ -n "${!file_var:-}" ]; then
		[ -r "${!file_var}" ] || die "$file_var=${!file_var} is not readable by uid $(id -u)"
		value=$(<"${!file_var}")
	fi
	export "$var"="$value"
	unset "$file_var"
}

setup_env() {
	: "${PGDATA:=/var/lib/postgresql/data}"
	export PGDATA
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=}"
	DATABASE_ALREADY_EXISTS=
	if [ -s "$PGDATA/PG_VERSION" ]; then
		DATABASE_ALREADY_EXISTS=true
	fi
}

create_directories() {
	local uid
	uid=$(id -u)
	mkdir -p "$PGDATA"
	chmod 00700 "$PGDATA" || :
	mkdir -p /var/run/postgresql
	chmod 03775 /var/run/postgresql || :
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		mkdir -p "$POSTGRES_INITDB_WALDIR"
		[ "$uid" = 0 ] && find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres: '{}' +
		chmod 700 "$POSTGRES_INITDB_WALDIR"
	fi
	if [ "$uid" = 0 ]; then
		# A fresh volume is root-owned: hand it (and only what is not already ours) to postgres.
		find "$PGDATA" \! -user postgres -exec chown postgres: '{}' +
		find /var/run/postgresql \! -user postgres -exec chown postgres: '{}' +
	fi
}

check_env() {
	if [ -n "$DATABASE_ALREADY_EXISTS" ]; then
		return
	fi
	if [ "${#POSTGRES_PASSWORD}" -ge 100 ]; then
		log "warning: POSTGRES_PASSWORD is ${#POSTGRES_PASSWORD} characters; md5 auth ignores characters beyond 100"
	fi
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		die "the database is uninitialized and no superuser password is set.
  Set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (recommended), or
  POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without a password (not recommended)."
	fi
	if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
		log "warning: POSTGRES_HOST_AUTH_METHOD=trust: every host may connect without a password"
	fi
}

init_database_dir() {
	local -a args=(--username="$POSTGRES_USER")
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		args+=(--waldir="$POSTGRES_INITDB_WALDIR")
	fi
	# The password reaches initdb through a pipe (never argv or a file). The process
	# substitution must sit on initdb's own command line: its fd lives only as long as that.
	# POSTGRES_INITDB_ARGS is split on whitespace on purpose (it is a list of options).
	# shellcheck disable=SC2086
	initdb "${args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
}

# The data directory's own pg_hba.conf: password (or trust) for TCP, as the official image.
# A deployment that sets hba_file (Shipyard does) uses its own file instead.
setup_hba() {
	local method=$POSTGRES_HOST_AUTH_METHOD
	if [ -z "$method" ]; then
		method=scram-sha-256
		if [ -n "$POSTGRES_PASSWORD" ]; then
			# honour a password_encryption chosen in the initdb args
			case "$POSTGRES_INITDB_ARGS" in *password_encryption=md5*) method=md5 ;; esac
		fi
	fi
	printf '\n# added by the shipyard entrypoint\nhost all all all %s\n' "$method" >>"$PGDATA/pg_hba.conf"
}

# Temporary server for first-boot setup: the user's own arguments (config_file, hba_file...)
# with TCP off, so nothing outside the container can connect before the setup is complete.
temp_server_start() {
	if [ "${1:-}" = postgres ]; then
		shift
	fi
	set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
	PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w -t 60 start
}

temp_server_stop() {
	PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -m fast -w -t 60 stop
}

run_sql() {
	local -a psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	if [ -n "${POSTGRES_DB:-}" ]; then
		psql+=(--dbname "$POSTGRES_DB")
	fi
	PGHOST= PGHOSTADDR= "${psql[@]}" "$@"
}

setup_db() {
	local exists
	exists=$(POSTGRES_DB=postgres run_sql -tA -v db="$POSTGRES_DB" <<-'SQL'
		SELECT 1 FROM pg_database WHERE datname = :'db';
	SQL
	)
	if [ -z "$exists" ]; then
		POSTGRES_DB=postgres run_sql -v db="$POSTGRES_DB" <<-'SQL'
			CREATE DATABASE :"db";
		SQL
		log "created database $POSTGRES_DB"
	fi
}

run_init_files() {
	local f
	for f in /docker-entrypoint-initdb.d/*; do
		[ -e "$f" ] || continue
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then
					log "running $f"; "$f"
				else
					log "sourcing $f"; . "$f"
				fi ;;
			*.sql)    log "running $f"; run_sql -f "$f" ;;
			*.sql.gz) log "running $f"; gunzip -c "$f" | run_sql ;;
			*.sql.xz) log "running $f"; xz -dc "$f" | run_sql ;;
			*)        log "ignoring $f" ;;
		esac
	done
}

wants_help() {
	local arg
	for arg; do
		case "$arg" in -'?'|--help|--describe-config|-V|--version) return 0 ;; esac
	done
	return 1
}

main() {
	if [ "${1:0:1}" = - ]; then
		set -- postgres "$@"
	fi
	if [ "$1" = postgres ] && ! wants_help "$@"; then
		setup_env
		create_directories
		if [ "$(id -u)" = 0 ]; then
			# Secrets in *_FILE were read above, as root; pass the values on in the environment
			# of this process only, then become postgres.
			export HOME=/var/lib/postgresql USER=postgres LOGNAME=postgres
			exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
		fi
		if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
			check_env
			ls /docker-entrypoint-initdb.d/ >/dev/null
			init_database_dir
			setup_hba
			export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
			temp_server_start "$@"
			setup_db
			run_init_files
			temp_server_stop
			unset PGPASSWORD
			log "PostgreSQL init process complete; ready for start up."
		else
			log "PostgreSQL database directory appears to contain a database; skipping initialization"
		fi
		# The password has done its job; the server never sees it in its environment.
		unset POSTGRES_PASSWORD
	fi
	exec "$@"
}

main "$@"
