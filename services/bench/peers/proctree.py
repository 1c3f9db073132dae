"""A worker and every process it started, from /proc: a process group is not enough (RQ puts
each work-horse in a group of its own). A process is known by its pid and its start time
together, so a signal never reaches another process that got a pid again after ours ended."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class Process(NamedTuple):
    pid: int
    started: int  # clock ticks after boot (man 5 proc, field 22)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of ``pid``; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])  # after the command: state, ppid, ... starttime


def tree(root: int) -> list[Process]:
    """``root`` and its descendants alive now (``root`` first)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if (stat := _stat(pid)) is not None:
            found.append(Process(pid, stat[1]))
            todo += children.get(pid, [])
    return found


def signal_alive(processes: list[Process], signum: int) -> None:
    """``signum`` to each of ``processes`` that is still the same process."""
    for process in processes:
        stat = _stat(process.pid)
        if stat is not None and stat[1] == process.started:
            try:
                os.kill(process.pid, signum)
            except ProcessLookupError:
                pass


def ancestor_among(pid: int, candidates: set[int]) -> int | None:
    """The first of ``candidates`` on the way from ``pid`` up its parents (``pid`` included)."""
    while pid > 1:
        if pid in candidates:
            return pid
        stat = _stat(pid)
        if stat is None:
            return None
        pid = stat[0]
    return None
