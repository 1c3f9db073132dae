"""uvicorn's httptools protocol with each response's writes sent as one (issue 23: submit rate).

uvicorn writes a response's status line and headers when the app sends ``http.response.start``,
and its body on ``http.response.body``: two writes, so two ``send`` syscalls, and on loopback
two wake-ups of the client for one answer (it reads the head, then waits for the body). On the
bench's 2 CPUs each wake-up and syscall is CPU the API and its clients share. Here the writes
made in one step of the event loop are joined and sent once, at the end of that step: a
response goes out whole, a moment (no I/O wait, no timer) later than its head alone would have."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescedWrites:
    """A transport's writes of one event-loop step, sent in one write; everything else is the
    transport's own. Closing sends what waits first."""

    def __init__(self, transport: asyncio.Transport):
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, data) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            if not self._transport.is_closing():
                self._transport.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name):
        return getattr(self._transport, name)


class CoalescedHttpTools(HttpToolsProtocol):
    """``uvicorn.run(http=...)``: the httptools protocol on a ``CoalescedWrites`` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(CoalescedWrites(transport))
