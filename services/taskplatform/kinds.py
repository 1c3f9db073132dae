"""Task kinds: how a package declares them (``kind``), how the platform finds those packages
(``load``, ``registry``) and how a worker runs one attempt of a kind without letting its code
crash the worker (``Runner``).

A package of kinds declares each kind on the function that does the work::

    from pydantic import BaseModel
    from taskplatform.kinds import kind

    class Resize(BaseModel):
        url: str
        width: int

    @kind("resize", payload=Resize, sync="process")
    def resize(payload: Resize) -> dict:
        ...

The API validates a create's payload against the kind's model (422 otherwise) and publishes it
in its OpenAPI; the worker validates it again, calls the function with the model instance (and,
when the function takes a second argument, a ``TaskContext``) and stores what it returns (a
dict or a pydantic model; the ``result`` model, when declared, is checked).

Where packages come from (``load``): the modules named in ``TASKS_KINDS_PACKAGES`` (import
paths; the platform's demo kinds by default) and every module an installed distribution names in
the entry-point group ``taskplatform.kinds``. The platform's own kind (``smoke``, the release's
smoke test) is always there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import importlib.metadata
import inspect
import json
import multiprocessing
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from taskplatform.storable import unstorable_json

ENTRY_POINT_GROUP = "taskplatform.kinds"
# The platform's own kinds, loaded whatever the settings say: the release's smoke test needs `smoke`.
PLATFORM_MODULES = ("taskplatform.smoke",)
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
Sync = Literal["thread", "process"]


class TaskFailed(Exception):
    """Raised by a kind's code to fail an attempt with this message (retried while attempts remain)."""


class PayloadRejected(TaskFailed):
    """The stored payload does not fit the kind's model (a row of an older model): no attempt
    can succeed, so the task ends at once."""


class KindError(Exception):
    """A kind declared wrongly, or a package of kinds that cannot be loaded: says which and what to do."""


@dataclass(frozen=True)
class TaskContext:
    """What a kind's function may know about the attempt it runs (its second argument, if it takes one)."""
    task_id: str
    attempt: int
    runner: Mapping[str, str] = field(default_factory=dict)  # colour, version, worker (host-pid)


@dataclass(frozen=True)
class Kind:
    name: str
    function: Callable[..., Any]
    payload: type[BaseModel] | None  # None: any JSON object, given to the function as a dict
    result: type[BaseModel] | None
    queue: str
    sync: Sync | None  # None: an async function, run in the worker's event loop
    takes_context: bool

    @property
    def module(self) -> str:
        return self.function.__module__

    def parse(self, payload: dict) -> Any:
        if self.payload is None:
            return payload
        try:
            return self.payload.model_validate(payload)
        except ValidationError as exc:
            raise PayloadRejected(f"the payload does not fit kind {self.name!r}: "
                                  + "; ".join(f"payload.{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
                                              for e in exc.errors())) from None


_declared: dict[str, Kind] = {}


def kind(name: str, *, payload: type[BaseModel] | None, result: type[BaseModel] | None = None,
         queue: str = "default", sync: Sync | None = None) -> Callable:
    """Declares the decorated function as task kind ``name``. ``payload``: the pydantic model a
    create's payload must fit (None: any JSON object). ``sync``, for a plain function: "thread"
    (the default) or "process" (a process of its own per attempt: for CPU-bound code, or code that
    may hang, crash or leak; killed at its timeout); an ``async def`` function runs in the
    worker's event loop and must not block it. ``queue``: the queue its tasks wait in (1-64 of
    a-z, 0-9, '_', '-'): each queue has its own slots in a worker and its own rate limit
    (runtime config ``queues``), so a slow kind on a queue of its own cannot delay the others."""
    if not NAME.match(name):
        raise KindError(f"task kind {name!r}: a name is 1-64 of a-z, 0-9, '_' and '-', starting with a letter")
    if not isinstance(queue, str) or not NAME.match(queue):
        raise KindError(f"task kind {name!r}: queue {queue!r}: a queue name is 1-64 of a-z, 0-9, '_' and '-', "
                        f"starting with a letter (or leave queue= out: 'default')")
    for label, model in (("payload", payload), ("result", result)):
        if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise KindError(f"task kind {name!r}: {label}= must be a pydantic model class (or None), not {model!r}")

    def declare(function: Callable) -> Callable:
        is_async = inspect.iscoroutinefunction(function)
        if is_async and sync is not None:
            raise KindError(f"task kind {name!r}: {function.__qualname__} is async and runs in the event loop; "
                            f"sync={sync!r} is for plain functions (drop it, or make the function plain)")
        if sync not in (None, "thread", "process"):
            raise KindError(f"task kind {name!r}: sync must be 'thread', 'process' or None, not {sync!r}")
        declared = Kind(name, function, payload, result, queue, None if is_async else (sync or "thread"),
                        len(inspect.signature(function).parameters) >= 2)
        earlier = _declared.get(name)
        if earlier is not None and _where(earlier.function) != _where(function):
            raise KindError(f"task kind {name!r} is declared twice: by {_where(earlier.function)} and by "
                            f"{_where(function)}; rename one")
        _declared[name] = declared
        return function

    return declare


def _where(function: Callable) -> str:
    return f"{function.__module__}.{function.__qualname__}"


# --- finding the packages ---------------------------------------------------------------------
def _entry_point_modules() -> list[tuple[str, str]]:
    """(module, where it was named) of every entry point in ``taskplatform.kinds``."""
    return [(ep.module, f"entry point {ep.name!r} of {ep.dist.name if ep.dist else 'a distribution'}")
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]


def load(packages: str) -> dict[str, Kind]:
    """Imports the platform's kinds, the modules of ``packages`` (comma-separated import paths,
    TASKS_KINDS_PACKAGES) and those of the entry-point group; returns every kind declared, by
    name. A module that cannot be imported or declares no kind is a ``KindError``."""
    named = [(module, "TASKS_KINDS_PACKAGES") for module in (p.strip() for p in packages.split(",")) if module]
    for module, where in [(m, "the platform") for m in PLATFORM_MODULES] + named + _entry_point_modules():
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's package, said where
            raise KindError(f"the kinds package {module!r} (from {where}) cannot be imported: {exc!r}; "
                            f"is it installed in the image, or on PYTHONPATH?") from exc
        if not any(k.module == module or k.module.startswith(module + ".") for k in _declared.values()):
            raise KindError(f"the kinds package {module!r} (from {where}) declares no task kind: does it import "
                            f"the modules whose functions carry @taskplatform.kinds.kind(...)?")
    return dict(sorted(_declared.items()))


_loaded: dict[str, Kind] | None = None


def registry(packages: str | None = None) -> dict[str, Kind]:
    """The kinds of this process, loaded on the first call from ``packages`` (else the process
    settings' TASKS_KINDS_PACKAGES), the same ever after."""
    global _loaded
    if _loaded is None:
        if packages is None:
            from taskplatform.settings import ProcessSettings
            packages = ProcessSettings().kinds_packages
        _loaded = load(packages)
    return _loaded


def names() -> list[str]:
    return list(registry())


DEFAULT_QUEUE = "default"


def queues() -> list[str]:
    """The queues of the loaded kinds, ``default`` always among them, sorted."""
    return sorted({DEFAULT_QUEUE, *(k.queue for k in registry().values())})


def queue_of(kind_name: str) -> str:
    """The queue of a kind; ``default`` for a kind this release does not know."""
    found = registry().get(kind_name)
    return found.queue if found is not None else DEFAULT_QUEUE


def canonical_json(payload: Any) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


# --- running an attempt -----------------------------------------------------------------------
def _contained(function: Callable, args: tuple) -> Any:
    """A kind's call, in a thread or a process: what it raises, SystemExit and KeyboardInterrupt
    included, becomes the attempt's failure, never the worker's."""
    try:
        value = function(*args)
    except Exception:
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt from task code
        raise TaskFailed(f"{exc.__class__.__name__}: {exc}") from None
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _in_child(function: Callable, args: tuple, sender) -> None:
    """The body of an attempt's own process: sends ("ok", result) or ("error", message)."""
    try:
        sender.send(("ok", _contained(function, args)))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the worker as the attempt's failure
        sender.send(("error", f"{exc.__class__.__name__}: {exc}"))
    finally:
        sender.close()


def _receive(receiver) -> tuple[str, Any] | None:
    try:
        return receiver.recv()
    except (EOFError, OSError):  # the process died without an answer (killed, os._exit, a crash)
        return None
    finally:
        receiver.close()


class Runner:
    """Runs attempts: an async kind in the event loop, a "thread" kind in a thread pool, a
    "process" kind in a process of its own (forked from a forkserver that has the kinds' modules
    imported, so a start costs a fork, not an interpreter). Whatever the code does — raise,
    SystemExit, block, hang, crash its process — the worker sees a failed attempt."""

    def __init__(self, threads: int):
        self.threads = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="kind")
        self.in_threads: set[concurrent.futures.Future] = set()  # bodies running in a thread, abandoned or not
        # Waiting for processes' answers: apart, so that hung thread kinds cannot starve them.
        self.waiters = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="kind-process")
        self.processes = multiprocessing.get_context("forkserver")
        self.processes.set_forkserver_preload(sorted({k.module for k in registry().values()}))

    def start(self) -> None:
        """Starts the forkserver now if a kind runs in processes: its first start imports the
        kinds' modules (a second or so), which the first attempt would otherwise wait for."""
        if any(k.sync == "process" for k in registry().values()):
            from multiprocessing import forkserver
            forkserver.ensure_running()

    async def run(self, kind: Kind, payload: dict, context: TaskContext) -> Any:
        args = (kind.parse(payload), context) if kind.takes_context else (kind.parse(payload),)
        if kind.sync is None:
            try:
                value = await kind.function(*args)
            except (SystemExit, KeyboardInterrupt) as exc:
                raise TaskFailed(f"{exc.__class__.__name__}: {exc}") from None
        elif kind.sync == "thread":
            running = self.threads.submit(_contained, kind.function, args)
            self.in_threads.add(running)
            running.add_done_callback(self.in_threads.discard)
            value = await asyncio.wrap_future(running)
        else:
            value = await self._in_process(kind, args)
        return result_json(kind, value)

    async def _in_process(self, kind: Kind, args: tuple) -> Any:
        multiprocessing.active_children()  # reaps the processes of attempts that ended
        receiver, sender = self.processes.Pipe(duplex=False)
        process = self.processes.Process(target=_in_child, args=(kind.function, args, sender), daemon=True,
                                         name=f"kind-{kind.name}")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.waiters, process.start)  # the first start also starts the forkserver
        sender.close()
        try:
            outcome = await loop.run_in_executor(self.waiters, _receive, receiver)
        finally:
            if process.is_alive() and process.exitcode is None:
                process.kill()  # a timeout or shutdown cancelled the attempt: its process goes with it
        if outcome is None:
            await loop.run_in_executor(self.waiters, process.join, 5)
            raise TaskFailed(f"the attempt's process ended without an outcome (exit code {process.exitcode})")
        if outcome[0] == "error":
            raise TaskFailed(outcome[1])
        return outcome[1]

    def close(self) -> int:
        """Lets the pools go; returns how many bodies still run in threads (timed out or handed
        back, they cannot be stopped): the process must then exit without joining them
        (``os._exit``), or a body that never returns would keep the worker from ever exiting."""
        self.threads.shutdown(wait=False, cancel_futures=True)
        self.waiters.shutdown(wait=False, cancel_futures=True)
        return len(self.in_threads)


def result_json(kind: Kind, value: Any) -> dict:
    """What an attempt stores as the task's result: checked against the kind's result model if
    it declares one; a dict (or a model) that PostgreSQL's jsonb can store."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if kind.result is not None:
        try:
            value = kind.result.model_validate(value).model_dump(mode="json")
        except ValidationError as exc:
            raise TaskFailed(f"kind {kind.name!r} returned a result that does not fit {kind.result.__name__}: "
                             f"{exc.errors()[0]['msg']} at {'.'.join(map(str, exc.errors()[0]['loc']))}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TaskFailed(f"kind {kind.name!r} returned {type(value).__name__}; return a dict or a pydantic model")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TaskFailed(f"kind {kind.name!r} returned a result that is not JSON: {exc}") from None
    if problem := unstorable_json(value, "result"):
        raise TaskFailed(f"kind {kind.name!r}: {problem}")
    return value
