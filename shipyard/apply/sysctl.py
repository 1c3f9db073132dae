"""pyinfra operation: the kernel settings the host's services need at least (shipyard.hostsysctl),
raised live with ``sysctl -w`` where lower and kept across reboots in one file under
/etc/sysctl.d. One fact reads the current values and the file; nothing runs when both are right."""

from __future__ import annotations

import io

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation

from shipyard import commands, hostsysctl

_FILE_MARK = "--- shipyard: persisted ---"


class SysctlState(FactBase):
    """(key → current value or None, the persisted file's text or "")."""

    def command(self, keys: tuple[str, ...], path: str) -> str:
        reads = "; ".join(f"printf '%s %s\\n' {k} \"$(sysctl -n {k} 2>/dev/null || echo '?')\"" for k in keys)
        return f"{reads}; echo '{_FILE_MARK}'; " + commands.to_shell(["cat", path]) + " 2>/dev/null || true"

    @staticmethod
    def default():
        return {}, ""

    def process(self, output):
        lines = list(output)
        cut = lines.index(_FILE_MARK) if _FILE_MARK in lines else len(lines)
        values: dict[str, int | None] = {}
        for line in lines[:cut]:
            key, _, value = line.partition(" ")
            values[key] = int(value) if value.strip().isdigit() else None
        return values, "".join(f"{line}\n" for line in lines[cut + 1:])


@operation()
def host_sysctls(env: str, wanted: tuple[hostsysctl.Needed, ...]):
    """Each wanted key at least at its minimum, now and after a reboot."""
    path = hostsysctl.persisted_path(env)
    current, persisted = host.get_fact(SysctlState, keys=tuple(n.key for n in wanted), path=path)
    for key, value in hostsysctl.to_raise(current, wanted).items():
        yield StringCommand("sysctl", "-w", f"{key}={value}")
    text = hostsysctl.persisted_text(env, current, wanted)
    if persisted != text:
        yield FileUploadCommand(io.BytesIO(text.encode()), path)
    if persisted == text and not hostsysctl.to_raise(current, wanted):
        host.noop(", ".join(f"{n.key} is at least {n.minimum}" for n in wanted))


def ensure_host_sysctls(env: str, wanted: tuple[hostsysctl.Needed, ...]) -> None:
    if wanted:
        host_sysctls(name=f"kernel settings: {', '.join(f'{n.key} >= {n.minimum}' for n in wanted)}",
                     env=env, wanted=wanted)
