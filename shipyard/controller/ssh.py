"""The deploying machine's SSH to an environment's hosts, with the inventory's user, port, key and
known hosts (shipyard.commands.ssh_options) — the same host data pyinfra connects with:

- ``unreachable``: every host asked at once before a deploy touches any;
- ``engine_tunnel``: a host's Docker engine as a local socket, forwarded over SSH, for the
  docker SDK (whose own ``ssh://`` reads only ~/.ssh/config: no inventory key, no known hosts);
  for a user that becomes root by sudo, a relay whose every connection is one
  ``sudo docker system dial-stdio`` over one shared SSH connection;
- ``port_tunnel``: a port the host reaches (its registry, a port published on its loopback) as a
  local port, for as long as the caller needs it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

from shipyard import commands
from shipyard.errors import ShipyardError
from shipyard.settings import HostSettings


# One SSH connection a host for the whole command: the first one-shot ssh to a host (the
# reachability check's, for a deploy) becomes the master, and the later ones of this process
# ride it — the audit event a deploy appends on every host, a release's writes, `make status` —
# where each made its own handshake (~0.2 s here). Closed at the process's exit; ControlPersist
# bounds one a killed process leaves. Tunnels and the sudo relay keep their own connections.
_SHARED_PERSIST_S = 60
_SHARED: list[str] = []  # the control sockets' directory, made on first use
_SHARED_LOCK = threading.Lock()


def shared(argv: list[str]) -> list[str]:
    """``argv`` (a one-shot ``commands.ssh``) over the process's shared connection to its host."""
    with _SHARED_LOCK:
        if not _SHARED:
            _SHARED.append(tempfile.mkdtemp(prefix="shipyard-ssh-"))
            atexit.register(close_shared)
    if len(_SHARED[0]) > 60:  # %C adds 41 characters; a socket's path holds ~104
        return argv
    return [argv[0], "-o", "ControlMaster=auto", "-o", f"ControlPath={_SHARED[0]}/%C",
            "-o", f"ControlPersist={_SHARED_PERSIST_S}", *argv[1:]]


def close_shared() -> None:
    """Every shared connection of this process closed (at its exit)."""
    with _SHARED_LOCK:
        if not _SHARED:
            return
        directory = _SHARED.pop()
    # -O exit reads no destination beyond the socket the path names; every host's at once (the
    # command's exit waits for them: ~0.07 s each on a busy machine, one after the other before).
    closing = [subprocess.Popen(["ssh", "-o", f"ControlPath={os.path.join(directory, name)}", "-O", "exit",
                                 "shipyard-shared"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for name in os.listdir(directory)]
    for process in closing:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(directory, ignore_errors=True)


def ask_reachable(hosts: list[HostSettings] | tuple[HostSettings, ...], argv: tuple[str, ...] = ("true",)
                  ) -> list[tuple[HostSettings, subprocess.Popen]]:
    """Each SSH host of ``hosts`` asked at once to run ``argv`` as root over SSH (the inventory's
    user, port, key and known hosts), without waiting: ``answers`` collects them. A deploy
    renders meanwhile (the SSH handshakes take as long as the render), and asks for what it
    reads of every host before pyinfra (the release state) in the same connection."""
    return [(h, subprocess.Popen(shared(commands.ssh(h, list(argv))), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)) for h in hosts if h.connect != "@local"]


def abandon(asked: list[tuple[HostSettings, subprocess.Popen]]) -> None:
    """The questions of ``ask_reachable`` no longer wanted (the deploy stopped before them)."""
    for _, process in asked:
        if process.poll() is None:
            process.kill()
        process.communicate()


def unreachable(hosts: list[HostSettings] | tuple[HostSettings, ...]) -> list[ShipyardError]:
    """An error per SSH host of ``hosts`` that does not run ``true`` over SSH (``answers``)."""
    return answers(ask_reachable(hosts))[0]


def answers(asked: list[tuple[HostSettings, subprocess.Popen]]) -> tuple[list[ShipyardError], dict[str, str]]:
    """(an error per host of ``ask_reachable``'s questions that did not run its command over SSH,
    naming it and the ssh client's reason; host name → what the command printed). A deploy asks
    this before any host is touched."""
    problems, printed = [], {}
    for host, process in asked:
        try:
            output, error = process.communicate(timeout=commands.SSH_CONNECT_TIMEOUT_S + 20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            output, error = b"", b"connected, but the command did not end"
        if process.returncode != 0:
            reason = error.decode(errors="replace").strip().splitlines()
            problems.append(ShipyardError(f"host {host.name} ({commands.ssh_destination(host)})",
                                          f"not reachable over SSH: {reason[-1] if reason else f'exit {process.returncode}'}",
                                          "bring the host back (or fix its ssh_* host data in the inventory) and deploy "
                                          "again; nothing was changed on any host"))
        else:
            printed[host.name] = output.decode(errors="replace")
    return problems, printed


_TUNNELS: dict[tuple, tuple[subprocess.Popen, str]] = {}
# `make status` asks the hosts from threads, and a component's view may reach another host:
# one tunnel per host, made by one thread.
_TUNNELS_LOCK = threading.Lock()


def engine_tunnel(host: HostSettings) -> str:
    """A local socket forwarded over SSH to ``host``'s engine (shipyard.commands.ssh_forward_docker),
    one per host for the process's life (closed at its exit): the path to give the docker SDK."""
    with _TUNNELS_LOCK:
        return _engine_tunnel(host)


def _engine_tunnel(host: HostSettings) -> str:
    key = (host.connect, host.ssh_user, host.ssh_port, host.ssh_key, host.ssh_known_hosts_file)
    found = _TUNNELS.pop(key, None)
    if found and found[0].poll() is None:
        _TUNNELS[key] = found
        return found[1]
    if found:  # its ssh ended (the host went away a while): a new one
        _remove(found[1])
    directory = tempfile.mkdtemp(prefix="shipyard-engine-")
    socket_path = os.path.join(directory, "docker.sock")
    try:
        if host.sudo:
            # The SSH user may not open root's socket: each connection of the SDK becomes one
            # `sudo docker system dial-stdio` over a shared SSH connection.
            relay = _EngineRelay(host, directory, socket_path)
            _RELAYS[socket_path] = relay
            process = relay.masters[0][0]
        else:
            process = _connected(host, commands.ssh_forward_docker(host, socket_path), socket_path)
    except ShipyardError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    _TUNNELS[key] = (process, socket_path)
    return socket_path


def _connected(host: HostSettings, argv: list[str], made: str) -> subprocess.Popen:
    """``argv`` (an ssh that makes the socket ``made`` once it is connected and authenticated, or
    exits with the reason) started and waited for."""
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + commands.SSH_CONNECT_TIMEOUT_S + 5
    while not os.path.exists(made):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            error = process.communicate()[1].decode(errors="replace").strip()
            raise ShipyardError(f"host {host.name} ({commands.ssh_destination(host)})",
                                f"ssh did not connect: {error or 'no answer within the connect timeout'}",
                                "check the host is up and its ssh_* host data in the inventory")
        time.sleep(0.02)
    return process


# Sessions one shared SSH connection carries at once: sshd's MaxSessions is 10 by default, and a
# session past it makes ssh connect on its own (a handshake, ~0.2 s, for each engine call). The
# SDK keeps up to 10 idle connections in its pool, and an exec takes one more of its own.
SESSIONS_PER_CONNECTION = 8


class _EngineRelay:
    """A local socket whose every connection is one ``sudo docker system dial-stdio`` on the
    host, over shared SSH connections (``ssh_control_master``): one more is opened when the
    others carry SESSIONS_PER_CONNECTION dials."""

    def __init__(self, host: HostSettings, directory: str, socket_path: str):
        self.host, self.directory = host, directory
        self.lock = threading.Lock()
        self.masters: list[list] = []  # [ssh process, control path, dials it carries]
        self._add_master()  # the first one now: a host that does not answer fails here
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(socket_path)
        self.listener.listen(16)
        threading.Thread(target=self._serve, daemon=True, name=f"engine relay {host.name}").start()

    def _add_master(self) -> list:
        control = os.path.join(self.directory, f"ssh{len(self.masters)}.ctl")
        master = [_connected(self.host, commands.ssh_control_master(self.host, control), control), control, 0]
        self.masters.append(master)
        return master

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed: the tunnel is gone
                return
            threading.Thread(target=self._dial, args=(client,), daemon=True).start()

    def _take(self) -> list:
        with self.lock:
            live = [m for m in self.masters if m[0].poll() is None]
            free = [m for m in live if m[2] < SESSIONS_PER_CONNECTION]
            try:
                master = free[0] if free else self._add_master()
            except ShipyardError:  # the host stopped answering: the call fails through the first one
                master = self.masters[0]
            master[2] += 1
            return master

    def _dial(self, client: socket.socket) -> None:
        """One SDK connection carried both ways. The engine's end (an exec's output read to its
        end: tunnel_client) is passed on as a half-close; the SDK's end ends the dial (the SDK
        never half-closes: it attaches no stdin), which frees its session."""
        master = self._take()
        try:
            process = subprocess.Popen(commands.ssh_engine_dial(self.host, master[1]), stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)

            def upstream() -> None:
                with contextlib.suppress(OSError):
                    while data := client.recv(65536):
                        view = memoryview(data)
                        while view:  # an unbuffered write may take only part of it
                            view = view[process.stdin.write(view):]
                process.terminate()

            threading.Thread(target=upstream, daemon=True).start()
            with contextlib.suppress(OSError):
                while data := process.stdout.read(65536):
                    client.sendall(data)
                client.shutdown(socket.SHUT_WR)
            process.wait()
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)  # wakes `upstream` if the SDK still holds it open
            client.close()
            with self.lock:
                master[2] -= 1

    def close(self) -> None:
        self.listener.close()
        for process, _, _ in self.masters:
            process.terminate()


# socket path → its relay (hosts reached through sudo)
_RELAYS: dict[str, _EngineRelay] = {}


def _remove(socket_path: str) -> None:
    relay = _RELAYS.pop(socket_path, None)
    if relay is not None:
        relay.close()
    shutil.rmtree(os.path.dirname(socket_path), ignore_errors=True)


@atexit.register
def _close_tunnels() -> None:
    for process, socket_path in _TUNNELS.values():
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
        _remove(socket_path)
    _TUNNELS.clear()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def port_tunnel(host: HostSettings, target: str, target_port: int, what: str) -> Iterator[str]:
    """``127.0.0.1:<port>`` on this machine, forwarded over SSH to ``target``:``target_port`` as
    ``host`` reaches it (``what`` names it in an error)."""
    port = _free_port()
    process = subprocess.Popen(commands.ssh_forward_port(host, port, target, target_port),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + commands.SSH_CONNECT_TIMEOUT_S + 5
        while True:  # ssh listens once it is connected and authenticated, or exits with the reason
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise ShipyardError(f"host {host.name} ({commands.ssh_destination(host)})",
                                    f"no tunnel to {what}: {process.communicate()[1].decode(errors='replace').strip()}",
                                    "check the host answers over SSH (make status)")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if process.poll() is None:
            process.kill()
