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


def unreachable(hosts: list[HostSettings] | tuple[HostSettings, ...]) -> list[ShipyardError]:
    """Each SSH host of ``hosts`` asked at once to run ``true`` over SSH (the inventory's user,
    port, key and known hosts): an error per host that did not, naming it and the ssh client's
    reason. A deploy asks this before any host is touched."""
    remote = [h for h in hosts if h.connect != "@local"]
    running = [(h, subprocess.Popen(commands.ssh(h, ["true"]), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)) for h in remote]
    problems = []
    for host, process in running:
        try:
            _, error = process.communicate(timeout=commands.SSH_CONNECT_TIMEOUT_S + 20)
        except subprocess.TimeoutExpired:
            process.kill()
            error = b"connected, but running `true` did not end"
        if process.returncode != 0:
            reason = error.decode(errors="replace").strip().splitlines()
            problems.append(ShipyardError(f"host {host.name} ({commands.ssh_destination(host)})",
                                          f"not reachable over SSH: {reason[-1] if reason else f'exit {process.returncode}'}",
                                          "bring the host back (or fix its ssh_* host data in the inventory) and deploy "
                                          "again; nothing was changed on any host"))
    return problems


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
    if host.sudo:
        # The SSH user may not open root's socket: each connection of the SDK becomes one
        # `sudo docker system dial-stdio` over a shared SSH connection.
        control = os.path.join(directory, "ssh.ctl")
        process = _connected(host, commands.ssh_control_master(host, control), control, directory)
        _RELAYS[socket_path] = _relay_engine(host, control, socket_path)
    else:
        process = _connected(host, commands.ssh_forward_docker(host, socket_path), socket_path, directory)
    _TUNNELS[key] = (process, socket_path)
    return socket_path


def _connected(host: HostSettings, argv: list[str], made: str, directory: str) -> subprocess.Popen:
    """``argv`` (an ssh that makes the socket ``made`` once it is connected and authenticated, or
    exits with the reason) started and waited for."""
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + commands.SSH_CONNECT_TIMEOUT_S + 5
    while not os.path.exists(made):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            error = process.communicate()[1].decode(errors="replace").strip()
            shutil.rmtree(directory, ignore_errors=True)
            raise ShipyardError(f"host {host.name} ({commands.ssh_destination(host)})",
                                f"ssh did not connect: {error or 'no answer within the connect timeout'}",
                                "check the host is up and its ssh_* host data in the inventory")
        time.sleep(0.02)
    return process


# socket path → the listening socket of a relay (hosts reached through sudo)
_RELAYS: dict[str, socket.socket] = {}


def _relay_engine(host: HostSettings, control: str, socket_path: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(16)

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed: the tunnel is gone
                return
            threading.Thread(target=_dial, args=(host, control, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True, name=f"engine relay {host.name}").start()
    return listener


def _dial(host: HostSettings, control: str, client: socket.socket) -> None:
    """One SDK connection carried both ways, each side's end passed on as a half-close (an
    exec's output is read to its end: tunnel_client)."""
    process = subprocess.Popen(commands.ssh_engine_dial(host, control), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)

    def upstream() -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                process.stdin.write(data)
        with contextlib.suppress(OSError):
            process.stdin.close()

    threading.Thread(target=upstream, daemon=True).start()
    with contextlib.suppress(OSError):
        while data := process.stdout.read(65536):
            client.sendall(data)
        client.shutdown(socket.SHUT_WR)
    process.wait()
    client.close()


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
