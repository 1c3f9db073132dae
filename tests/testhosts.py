"""Docker hosts on this machine for the multi-host tests (issue 25): each a network namespace
with a private mount namespace, its own ``dockerd`` and ``sshd``, the hosts joined by a bridge
of the run's own, reached over SSH with a key made for the run.

Why namespaces: privileged containers cannot start here, so docker-in-docker is out
(../shared/WORKPLACE.md). What makes a namespace a host:

- its address on the run's bridge (a /24 of 10.231.0.0/16 no route of the machine uses); the
  machine is the bridge's ``.1``, host *i* is ``.(10 + i)``;
- a private mount namespace in which its own directories are bound over ``/var/lib/docker``,
  ``/opt``, ``/etc/docker`` (the engine's trust of registries, certs.d) and ``/root/.docker`` (the
  docker client's logins) and a tmpfs over ``/run``, so its dockerd keeps its images, containers,
  sockets, state and trust apart from the machine's engine and from the other hosts, at the
  usual paths (a ``docker`` over SSH finds ``/var/run/docker.sock``);
- ``sshd`` in that same mount namespace, listening on the host's address only, root by key.

The machine's own engine sets ``br_netfilter`` and a FORWARD policy of DROP, so traffic between
two hosts over the bridge would be dropped: one rule in ``DOCKER-USER`` accepts what stays on
the run's bridge, and is removed with the bridge.

Everything is removed by ``TestHosts.close`` — also when creating them failed half way, and for
the run's leftovers found by name (``remove_leftovers``: an aborted run). Entered with
``nsenter --net`` rather than ``ip netns exec``, which remounts /sys and leaves dockerd without
cgroups.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "sy"  # every name a run makes starts with it and the run's id: leftovers are found by it
ROOT_PARENT = Path(tempfile.gettempdir())
SPACE = ipaddress.ip_network("10.231.0.0/16")
SSHD = "/usr/sbin/sshd"
# Where a run given ``access=True`` puts a copy of its key and a known_hosts file naming each
# host's key by its address: what inventories/multi.py points pyinfra and the controller's ssh at.
ACCESS_DIR = ROOT_PARENT / "shipyard-testhosts"
STOP_TIMEOUT_S = 30
# The SSH user inventories/multi.py reaches h2 as: not root, root by passwordless sudo (a user of
# the machine, so of every host: their /etc is the machine's), the run's key its authorized key.
DEPLOY_USER = "shipyard"
SUDOERS = Path("/etc/sudoers.d/shipyard-testhosts")

# The host's engine, started in the background (``$dir``: the host's directory).
DOCKERD = r"""nohup dockerd --host unix:///run/docker.sock --data-root /var/lib/docker --exec-root /run/docker \
  --pidfile "$dir/dockerd.pid" --log-level warn >>"$dir/dockerd.log" 2>&1 &"""
# Run inside the host's new mount namespace (unshare -m), in its network namespace: the mounts
# that make it a machine of its own, then its daemons. Its arguments: the host's directory and
# address.
START = r"""set -eu
dir=$1; address=$2
mount --make-rprivate /
mount --bind "$dir/docker" /var/lib/docker
mount --bind "$dir/opt" /opt
mount --bind "$dir/etc-docker" /etc/docker
mkdir -p /root/.docker
mount --bind "$dir/root-docker" /root/.docker
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/sshd /run/containerd
ip link set lo up
""" + DOCKERD + r"""
/usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
"""


class HostsError(RuntimeError):
    pass


def run(argv: list[str], timeout: float = 60, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise HostsError(f"{' '.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}")
    return done


@dataclass
class TestHost:
    name: str  # h1, h2, ...
    address: str
    netns: str
    dir: Path
    key: Path  # the run's SSH private key

    def ssh_argv(self, *command: str) -> list[str]:
        return ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
                f"root@{self.address}", *command]

    def ssh(self, *command: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """``command`` run on the host over SSH (a shell command line, as ssh sends it)."""
        return run(self.ssh_argv(*command), timeout=timeout, check=check)

    def stop_sshd(self) -> None:
        """The host stays up, its engine runs, but nothing answers on its SSH port."""
        _stop(_pid(self.dir / "sshd.pid"), 5)

    def start_sshd(self) -> None:
        """sshd again, in the host's network and mount namespaces (its dockerd's)."""
        mounts = f"/proc/{_pid(self.dir / 'dockerd.pid')}/ns/mnt"
        run(["nsenter", f"--net=/run/netns/{self.netns}", f"--mount={mounts}", SSHD, "-f", str(self.dir / "sshd_config"),
             "-E", str(self.dir / "sshd.log")])

    def stop_engine(self) -> None:
        """Its dockerd stopped, as `systemctl stop docker` does (it stops its containers first); the
        host, its address and its sshd stay."""
        _stop(_pid(self.dir / "dockerd.pid"), STOP_TIMEOUT_S)

    def start_engine(self, timeout_s: float = 60) -> None:
        """dockerd again, in the host's network and mount namespaces (sshd's, which kept them),
        until it answers over SSH."""
        mounts = f"/proc/{_pid(self.dir / 'sshd.pid')}/ns/mnt"
        run(["nsenter", f"--net=/run/netns/{self.netns}", f"--mount={mounts}", "sh", "-c", f"dir=$1; {DOCKERD}", "sh",
             str(self.dir)])
        deadline = time.monotonic() + timeout_s
        while self.ssh("docker info >/dev/null", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise HostsError(f"{self.name}: dockerd does not answer {timeout_s:.0f} s after its start")
            time.sleep(0.5)

    def inside(self, argv: list[str], timeout: float = 60, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """``argv`` run in the host's network namespace (the machine's files): a client on
        this host reaching the others."""
        return run(["nsenter", f"--net=/run/netns/{self.netns}", *argv], timeout=timeout, check=check, **kwargs)


@dataclass
class TestHosts:
    """``count`` hosts; a context manager that removes them on leaving. ``subnet``: a fixed /24
    (an inventory names their addresses), else a free one. ``access``: the key and the hosts'
    keys written to ACCESS_DIR too (one such run at a time)."""
    count: int = 3
    subnet: ipaddress.IPv4Network | None = None
    access: bool = False
    run_id: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: list[TestHost] = field(default_factory=list)

    def __post_init__(self):
        self.tag = f"{PREFIX}{self.run_id}"  # at most 6 characters: interface names end at 15
        self.bridge = f"{self.tag}br"
        self.root = ROOT_PARENT / f"shipyard-hosts-{self.tag}"

    # --- making them ---------------------------------------------------------------------
    def __enter__(self) -> "TestHosts":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        for tool in ("dockerd", "nsenter", "unshare", "ip", "iptables", "ssh", "ssh-keygen", SSHD):
            if not shutil.which(tool):
                raise HostsError(f"{tool} is not installed: `make host-test-hosts` installs what the test hosts need")
        if self.subnet is None:
            self.subnet = free_subnet()
        elif any(self.subnet.overlaps(used) for used in _routed()):
            raise HostsError(f"{self.subnet} is routed on this machine already (another run's test hosts?): "
                             "tests.testhosts.remove_leftovers() removes an aborted run's")
        # Traversable, not listable: sshd reads a user's authorized keys as that user (the
        # deploy user's too); what is private in it (the run's key, the hosts' keys) is 0600.
        self.root.mkdir(mode=0o711)
        os.chmod(self.root, 0o711)
        key = self.root / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"shipyard test hosts {self.tag}", "-f", str(key)])
        gateway = f"{self.subnet.network_address + 1}/{self.subnet.prefixlen}"
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "addr", "add", gateway, "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        run(["iptables", "-I", "DOCKER-USER", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"])
        for index in range(1, self.count + 1):
            self.hosts.append(self._start_host(index, key))
        for host in self.hosts:
            self._wait_ready(host)
        if self.access:
            ensure_deploy_user()
            self._write_access(key)

    def _write_access(self, key: Path) -> None:
        if ACCESS_DIR.exists():
            raise HostsError(f"{ACCESS_DIR} exists: another run's test hosts use it (or an aborted run left it: "
                             "tests.testhosts.remove_leftovers() removes it)")
        ACCESS_DIR.mkdir(mode=0o700)
        (ACCESS_DIR / "owner").write_text(self.tag)
        shutil.copy(key, ACCESS_DIR / "id_ed25519")
        os.chmod(ACCESS_DIR / "id_ed25519", 0o600)
        # "<address> <key type> <key>" per host: its key, never whatever answers at the address.
        (ACCESS_DIR / "known_hosts").write_text("".join(
            f"{host.address} {' '.join((host.dir / 'ssh_host_ed25519_key.pub').read_text().split()[:2])}\n"
            for host in self.hosts))

    def _start_host(self, index: int, key: Path) -> TestHost:
        name = f"h{index}"
        netns, outside = f"{self.tag}-{name}", f"{self.tag}{name}"
        address = str(self.subnet.network_address + 10 + index)
        host = TestHost(name, address, netns, self.root / name, key)
        for sub in ("docker", "opt", "etc-docker", "root-docker"):
            (host.dir / sub).mkdir(parents=True)
        run(["ip", "netns", "add", netns])
        run(["ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", netns])
        run(["ip", "link", "set", outside, "master", self.bridge, "up"])
        inside = ["ip", "netns", "exec", netns]  # only for ip(8) itself: no dockerd under it
        run([*inside, "ip", "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0"])
        run([*inside, "ip", "link", "set", "eth0", "up"])
        run([*inside, "ip", "route", "add", "default", "via", str(self.subnet.network_address + 1)])
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host.dir / "ssh_host_ed25519_key")])
        (host.dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
        os.chmod(host.dir, 0o711)
        os.chmod(host.dir / "authorized_keys", 0o644)
        (host.dir / "sshd_config").write_text(
            f"ListenAddress {address}\nHostKey {host.dir}/ssh_host_ed25519_key\nPidFile {host.dir}/sshd.pid\n"
            f"AuthorizedKeysFile {host.dir}/authorized_keys\n"
            # Its files live under the machine's temporary directory, which is world-writable.
            "StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nAcceptEnv LANG LC_*\nSubsystem sftp internal-sftp\n")
        (host.dir / "start.sh").write_text(START)
        run(["nsenter", f"--net=/run/netns/{netns}", "unshare", "-m", "sh", str(host.dir / "start.sh"),
             str(host.dir), address], timeout=30)
        return host

    def _wait_ready(self, host: TestHost, timeout_s: float = 90) -> None:
        """Its dockerd answers over SSH (sshd first, then the engine that SSH reaches)."""
        deadline, last = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline:
            done = host.ssh("docker", "version", "--format", "{{.Server.Version}}", timeout=15, check=False)
            if done.returncode == 0:
                return
            last = (done.stderr or done.stdout).strip()
            time.sleep(0.5)
        log = (host.dir / "dockerd.log").read_text()[-2000:] if (host.dir / "dockerd.log").exists() else ""
        raise HostsError(f"test host {host.name} ({host.address}): its engine did not answer over SSH within "
                         f"{timeout_s:.0f} s: {last}\ndockerd.log:\n{log}")

    # --- removing them -------------------------------------------------------------------
    def close(self) -> None:
        """Every daemon stopped, the namespaces, links, rule and directories removed; what
        fails is tried for the rest and then raised."""
        problems = remove_run(self.tag, self.root)
        if problems:
            raise HostsError("; ".join(problems))


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _stop(pid: int | None, timeout_s: float) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def remove_run(tag: str, root: Path) -> list[str]:
    problems: list[str] = []
    namespaces = [n.split()[0] for n in run(["ip", "netns", "list"], check=False).stdout.splitlines()
                  if n.startswith(f"{tag}-")]
    for host_dir in sorted(root.glob("h*")) if root.exists() else []:
        _stop(_pid(host_dir / "sshd.pid"), 5)
        _stop(_pid(host_dir / "dockerd.pid"), STOP_TIMEOUT_S)  # it stops its containers first
    for netns in namespaces:
        # What is left in it (containerd shims, a container's processes): killed, then it goes.
        for pid in run(["ip", "netns", "pids", netns], check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        if run(["ip", "netns", "del", netns], check=False).returncode != 0:
            problems.append(f"network namespace {netns} not removed")
    links = run(["ip", "-o", "link", "show"], check=False).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(tag):
            run(["ip", "link", "del", name], check=False)
    bridge = f"{tag}br"
    while run(["iptables", "-D", "DOCKER-USER", "-i", bridge, "-o", bridge, "-j", "ACCEPT"], check=False).returncode == 0:
        pass
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
        if root.exists():
            problems.append(f"{root} not removed")
    owner = ACCESS_DIR / "owner"
    if owner.exists() and owner.read_text() == tag:
        shutil.rmtree(ACCESS_DIR, ignore_errors=True)
    return problems


def ensure_deploy_user() -> None:
    """DEPLOY_USER on the machine (so on every host), allowed to log in by key (a locked
    password would refuse it: sshd runs without PAM), root by passwordless sudo."""
    if not shutil.which("sudo"):
        raise HostsError("sudo is not installed: `make host-test-hosts` installs what the test hosts need")
    if run(["id", "-u", DEPLOY_USER], check=False).returncode != 0:
        run(["useradd", "--create-home", "--shell", "/bin/sh", DEPLOY_USER])
    run(["usermod", "-p", "*", DEPLOY_USER])
    rule = f"{DEPLOY_USER} ALL=(ALL) NOPASSWD: ALL\n"
    if not SUDOERS.exists() or SUDOERS.read_text() != rule:
        SUDOERS.write_text(rule)
        os.chmod(SUDOERS, 0o440)


def remove_leftovers() -> list[str]:
    """The hosts of runs that did not get to remove theirs (killed): by their names."""
    tags = {n.split("-")[0] for n in run(["ip", "netns", "list"], check=False).stdout.split()
            if n.startswith(PREFIX) and "-h" in n}
    tags |= {p.name.removeprefix("shipyard-hosts-") for p in ROOT_PARENT.glob(f"shipyard-hosts-{PREFIX}*")}
    problems = []
    for tag in sorted(tags):
        problems += remove_run(tag, ROOT_PARENT / f"shipyard-hosts-{tag}")
    shutil.rmtree(ACCESS_DIR, ignore_errors=True)  # its run's hosts are gone (or it had none)
    return problems


def _routed() -> list[ipaddress.IPv4Network]:
    """The networks of the machine's routes (every table), the default route left out."""
    used = []
    for line in run(["ip", "-4", "-o", "route", "show", "table", "all"], check=False).stdout.splitlines():
        first = line.split()[0]
        try:
            network = ipaddress.ip_network(first, strict=False)
        except ValueError:
            continue
        if network.prefixlen > 0:
            used.append(network)
    return used


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 of ``SPACE`` that no address or route of the machine touches."""
    used = _routed()
    candidates = list(SPACE.subnets(new_prefix=24))
    start = secrets.randbelow(len(candidates))
    for subnet in candidates[start:] + candidates[:start]:
        if not any(subnet.overlaps(u) for u in used):
            return subnet
    raise HostsError(f"no free /24 in {SPACE} for the test hosts")


MULTI_SUBNET = ipaddress.ip_network("10.231.250.0/24")  # inventories/multi.py's addresses


@contextlib.contextmanager
def multi_hosts():
    """The `multi` inventory's three hosts at its fixed addresses, with the access it names (an
    aborted earlier run's hosts removed first): address → TestHost."""
    problems = remove_leftovers()
    if problems:
        raise HostsError(f"an earlier run's test hosts could not be removed: {problems}")
    with TestHosts(3, subnet=MULTI_SUBNET, access=True) as made:
        yield {h.address: h for h in made.hosts}

