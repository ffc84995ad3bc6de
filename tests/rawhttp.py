"""Raw HTTP/1.1 and HTTP/2 over TLS, byte for byte, for the transport tests: what a hostile or
careless client sends, which httpx would refuse to send or would tidy up."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events

from registryd.certs import DevCerts

ANSWER_TIMEOUT_S = 10


def tls_context(certs: DevCerts, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.set_alpn_protocols(list(alpn))
    return context


async def open_tls(
    url: str, certs: DevCerts, *, local: str | None = None, alpn: tuple[str, ...] = ("http/1.1",)
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection to ``url`` (from loopback address ``local``, if given)."""
    parts = urlsplit(url)
    return await asyncio.open_connection(
        parts.hostname,
        parts.port,
        ssl=tls_context(certs, alpn),
        local_addr=(local, 0) if local else None,
    )


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One HTTP/1.1 answer with a ``content-length``; raises if the connection ends first."""
    async with asyncio.timeout(ANSWER_TIMEOUT_S):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, headers, body)


class H2Client:
    """A bare HTTP/2 client (the h2 library) on one TLS connection, for frames httpx would not
    send: ``CONNECT``, a body that goes on after the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.events: list[h2.events.Event] = []

    @classmethod
    async def connect(cls, url: str, certs: DevCerts) -> H2Client:
        reader, writer = await open_tls(url, certs, alpn=("h2",))
        if writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
            raise AssertionError("the server did not negotiate h2")
        client = cls(reader, writer)
        await client.flush()
        return client

    async def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())
        await self.writer.drain()

    async def receive(self) -> None:
        """Read once from the server and take in its frames."""
        data = await self.reader.read(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.events += self.h2.receive_data(data)
        await self.flush()

    async def until(self, done: type[h2.events.Event], stream_id: int) -> list[h2.events.Event]:
        """Read until an event of type ``done`` for ``stream_id``; returns that stream's events."""
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            while not any(
                isinstance(e, done) and getattr(e, "stream_id", None) == stream_id
                for e in self.events
            ):
                await self.receive()
        return [e for e in self.events if getattr(e, "stream_id", None) == stream_id]

    async def send_body(self, stream_id: int, data: bytes) -> None:
        """Send ``data`` on ``stream_id`` as flow control allows, then end the stream."""
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            while data:
                window = min(
                    self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
                )
                if window <= 0:
                    await self.receive()
                    continue
                self.h2.send_data(stream_id, data[:window])
                data = data[window:]
                await self.flush()
        self.h2.end_stream(stream_id)
        await self.flush()

    def close(self) -> None:
        self.writer.close()


def h2_status(events: list[h2.events.Event]) -> int:
    for event in events:
        if isinstance(event, h2.events.ResponseReceived):
            return int(dict(event.headers)[b":status"])
    raise AssertionError(f"no response in {events}")


def h2_body(events: list[h2.events.Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
