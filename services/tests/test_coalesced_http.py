"""A response's writes go out as one (``taskplatform.coalesced_http``): what is written in one
step of the event loop is sent once at its end, and nothing written is lost on close."""

from __future__ import annotations

import asyncio

import requests

from taskplatform.coalesced_http import CoalescedWrites


class Recorded:
    def __init__(self):
        self.writes, self.closed = [], False

    def write(self, data):
        self.writes.append(data)

    def get_write_buffer_size(self):
        return 0

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def get_extra_info(self, name, default=None):
        return f"info:{name}"


def test_the_writes_of_one_step_are_sent_as_one_after_it():
    async def scenario():
        real = Recorded()
        transport = CoalescedWrites(real)
        transport.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
        transport.writelines([b"{", b"}"])
        assert real.writes == [] and transport.get_write_buffer_size() == 27
        await asyncio.sleep(0)
        transport.write(b"next")
        await asyncio.sleep(0)
        return real.writes

    assert asyncio.run(scenario()) == [b"HTTP/1.1 202 Accepted\r\n\r\n{}", b"next"]


def test_close_sends_what_waits_first_and_the_rest_is_the_transports():
    async def scenario():
        real = Recorded()
        transport = CoalescedWrites(real)
        transport.write(b"last words")
        transport.close()
        await asyncio.sleep(0)
        return real, transport.get_extra_info("peername")

    real, info = asyncio.run(scenario())
    assert real.writes == [b"last words"] and real.closed and info == "info:peername"


def test_the_api_answers_whole_through_it(api_url):
    # The suite's API runs on it (``taskplatform api``): a keep-alive client gets whole answers.
    with requests.Session() as session:
        for _ in range(3):
            answer = session.get(f"{api_url}/health", timeout=5)
            assert answer.status_code == 200 and answer.json()
