"""registryd.client: transparent proof of work (spec 4.7) and constant-shape resolve misses."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from registryd import wire
from registryd.abuse.pow import ProofOfWork
from registryd.client import AsyncRegistryClient, IdentityKeys, RegistryClient
from registryd.client import clients as client_mod
from registryd.config import PowConfig
from registryd.errors import PowRequired, ProtocolError, ServerError
from registryd.hashcash import HEADER, SolveCancelled, solve
from tests.client_support import URL, assert_identity_of, forging_server, sync_client
from tests.helpers import Clock, seal_resolution
from tests.vectors import KID_HEX, PEPPER, SERVER_PUBLIC_HEX

CLIENT_KEY = "192.0.2.1"
Seen = tuple[str, str, str | None]  # method, path, x-enigma-pow header


def error(exc: PowRequired | ServerError) -> httpx.Response:
    return httpx.Response(400, json={"error": {"code": exc.code, "message": exc.message}})


def sealed_answer(request: httpx.Request, plaintext: bytes | None) -> httpx.Response:
    """The /resolve answer sealing ``plaintext`` to the requester as the server would."""
    req = wire.decode(request.content, wire.ResolveRequest)
    envelope = None if plaintext is None else seal_resolution(req, plaintext)
    return httpx.Response(200, content=wire.encode(wire.ResolveResponse(req.handle, envelope)))


class PowServer:
    """A registry with ``[pow] enabled``: ``/resolve`` and ``/check_user`` answer 400
    ``POW_REQUIRED`` unless the request carries a proof from its real :class:`ProofOfWork`."""

    def __init__(self, difficulty: int = 8, *, plaintext: bytes | None = None) -> None:
        self.clock = Clock()
        self.pow = ProofOfWork(PowConfig(enabled=True, difficulty=difficulty), self.clock)
        self.enabled = True
        self.plaintext = plaintext  # what /resolve seals; None answers "envelope": null
        self.issue_to = CLIENT_KEY  # another key makes every proof fail
        self.seen: list[Seen] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        header = request.headers.get(HEADER)
        path = request.url.path
        self.seen.append((request.method, path, header))
        if path == "/pow/challenge":
            if not self.enabled:
                return httpx.Response(404)
            return httpx.Response(200, json=self.pow.issue(self.issue_to))
        if self.enabled and (path == "/resolve" or path.startswith("/check_user/")):
            try:
                self.pow.verify(header, CLIENT_KEY)
            except PowRequired as exc:
                return error(exc)
        if path == "/resolve":
            return sealed_answer(request, self.plaintext)
        if path.startswith("/check_user/"):
            return httpx.Response(200, json={"exists": True})
        if path == "/announce":
            return httpx.Response(200, json={"ok": True})
        return httpx.Response(404)

    def take(self) -> list[Seen]:
        seen, self.seen = self.seen, []
        return seen


def proven(seen: list[Seen]) -> list[tuple[str, str, bool]]:
    """``seen`` with each header replaced by whether it is a correct proof."""
    out = []
    for method, path, header in seen:
        ok = False
        if header is not None:
            challenge, _, solution = header.partition(":")
            ok = solution == solve(challenge, 8)
        out.append((method, path, ok))
    return out


def alice_json(padding: bytes = b"") -> tuple[IdentityKeys, bytes]:
    keys = IdentityKeys.generate()
    return keys, keys.identity("alice").to_json() + padding


# -- proof of work ----------------------------------------------------------------------------


def test_blocking_client_does_the_proof_of_work_transparently() -> None:
    keys, identity = alice_json()
    server = PowServer(plaintext=identity)
    with sync_client(server.transport()) as client:
        assert_identity_of(client.resolve("alice"), "alice", keys)
        assert proven(server.take()) == [
            ("POST", "/resolve", False),
            ("GET", "/pow/challenge", False),
            ("POST", "/resolve", True),  # retried once, with the proof
        ]
        assert_identity_of(client.resolve("alice"), "alice", keys)
        assert client.check_user("alice") is True
        handle = keys.identity("alice").user_id
        assert proven(server.take()) == [  # later calls prove up front
            ("GET", "/pow/challenge", False),
            ("POST", "/resolve", True),
            ("GET", "/pow/challenge", False),
            ("GET", f"/check_user/{handle}", True),
        ]
        client.announce("alice", "tcp://203.0.113.1:4000", 1)
        assert server.take() == [("POST", "/announce", None)]  # only lookups are proven


async def test_async_client_does_the_proof_of_work_transparently() -> None:
    keys, identity = alice_json()
    server = PowServer(plaintext=identity)
    async with AsyncRegistryClient(URL, PEPPER, transport=server.transport()) as client:
        assert await client.check_user("alice") is True
        handle = keys.identity("alice").user_id
        assert proven(server.take()) == [
            ("GET", f"/check_user/{handle}", False),
            ("GET", "/pow/challenge", False),
            ("GET", f"/check_user/{handle}", True),
        ]
        assert_identity_of(await client.resolve("alice"), "alice", keys)
        assert proven(server.take()) == [
            ("GET", "/pow/challenge", False),
            ("POST", "/resolve", True),
        ]
        results = await asyncio.gather(*(client.resolve("alice") for _ in range(10)))
        assert all(r is not None and r.handle == keys.identity("alice").handle for r in results)
        assert sum(path == "/pow/challenge" for _, path, _ in server.take()) == 10


def test_the_retry_happens_once() -> None:
    server = PowServer()
    server.issue_to = "someone else"
    with sync_client(server.transport()) as client, pytest.raises(ServerError) as err:
        client.resolve("alice")
    assert (err.value.status, err.value.code) == (400, "POW_REQUIRED")
    assert [path for _, path, _ in server.take()] == ["/resolve", "/pow/challenge", "/resolve"]


def test_a_refused_up_front_proof_is_not_retried() -> None:
    server = PowServer()
    with sync_client(server.transport()) as client:
        assert client.check_user("alice") is True
        server.take()
        server.issue_to = "someone else"
        with pytest.raises(ServerError, match="POW_REQUIRED"):
            client.check_user("alice")
    assert len(server.take()) == 2


def test_other_errors_are_not_retried() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(429, json={"error": {"code": "RATE_LIMITED", "message": "rate"}})

    with sync_client(httpx.MockTransport(handler)) as client, pytest.raises(ServerError) as err:
        client.resolve("alice")
    assert err.value.code == "RATE_LIMITED"
    assert seen == ["/resolve"]


def test_a_server_that_switches_proof_of_work_off_is_followed() -> None:
    server = PowServer()
    with sync_client(server.transport()) as client:
        assert client.resolve("alice") is None
        server.enabled = False
        server.take()
        assert client.resolve("alice") is None
        assert [path for _, path, _ in server.take()] == ["/pow/challenge", "/resolve"]
        assert client.resolve("alice") is None
        assert server.take() == [("POST", "/resolve", None)]


def test_a_challenge_above_max_pow_difficulty_is_a_protocol_error() -> None:
    server = PowServer(difficulty=9)
    transport = server.transport()
    with RegistryClient(URL, PEPPER, transport=transport, max_pow_difficulty=8) as client:
        with pytest.raises(ProtocolError, match="max_pow_difficulty=8"):
            client.resolve("alice")
    assert [path for _, path, _ in server.take()] == ["/resolve", "/pow/challenge"]


@pytest.mark.parametrize("difficulty", [25, 40, 255])
def test_default_max_pow_difficulty_is_24(difficulty: int) -> None:
    server = PowServer(difficulty=difficulty)  # the client stops before solving anything
    with sync_client(server.transport()) as client, pytest.raises(ProtocolError, match="24"):
        client.check_user("alice")


async def test_async_client_refuses_a_hostile_difficulty_before_solving() -> None:
    server = PowServer(difficulty=200)
    async with AsyncRegistryClient(URL, PEPPER, transport=server.transport()) as client:
        with pytest.raises(ProtocolError, match="200 bits"):
            await client.resolve("alice")


def challenge_server(answer: object) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/pow/challenge":
            body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            return httpx.Response(200, content=body)
        return error(PowRequired())

    return httpx.MockTransport(handler)


GOOD = {"challenge": "00112233445566778899aabbccddeeff", "difficulty": 8, "expires_ms": 1}


@pytest.mark.parametrize(
    "answer",
    [
        {**GOOD, "challenge": "0011:2233"},
        {**GOOD, "challenge": ""},
        {**GOOD, "challenge": "0011 2233"},
        {**GOOD, "challenge": "00112233\r\nx-evil: 1"},
        {**GOOD, "challenge": "0011é"},
        {**GOOD, "challenge": "a" * 257},
        {**GOOD, "challenge": 12},
        {**GOOD, "difficulty": -1},
        {**GOOD, "difficulty": 8.0},
        {**GOOD, "difficulty": "8"},
        {**GOOD, "expires_ms": -1},
        {**GOOD, "extra": 1},
        {"challenge": GOOD["challenge"], "difficulty": 8},
        [],
        b"not json",
    ],
)
def test_a_malformed_challenge_is_a_protocol_error(answer: object) -> None:
    with sync_client(challenge_server(answer)) as client, pytest.raises(ProtocolError):
        client.resolve("alice")


def test_an_opaque_challenge_of_another_shape_is_solved() -> None:
    seen: list[str | None] = []
    challenge = "reference-style_opaque.challenge~42"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/pow/challenge":
            return httpx.Response(200, json={**GOOD, "challenge": challenge})
        seen.append(request.headers.get(HEADER))
        if request.headers.get(HEADER) != f"{challenge}:{solve(challenge, 8)}":
            return error(PowRequired())
        return httpx.Response(200, json={"exists": False})

    with sync_client(httpx.MockTransport(handler)) as client:
        assert client.check_user("alice") is False
    assert seen == [None, f"{challenge}:{solve(challenge, 8)}"]


@pytest.mark.parametrize("value", [-1, 256])
def test_bad_max_pow_difficulty(value: int) -> None:
    with pytest.raises(ValueError, match="max_pow_difficulty"):
        RegistryClient(URL, PEPPER, max_pow_difficulty=value)


async def test_cancelling_the_async_client_stops_the_solver_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started, stopped = threading.Event(), threading.Event()

    def spying_solve(challenge: str, difficulty: int, *, stop: threading.Event) -> str:
        started.set()
        try:
            return solve(challenge, difficulty, stop=stop)
        except SolveCancelled:
            stopped.set()
            raise

    monkeypatch.setattr(client_mod, "solve_pow", spying_solve)
    server = PowServer(difficulty=64)  # would take centuries
    transport = server.transport()
    async with AsyncRegistryClient(URL, PEPPER, transport=transport, max_pow_difficulty=64) as c:
        task = asyncio.create_task(c.resolve("alice"))
        assert await asyncio.to_thread(started.wait, 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(stopped.wait, 30)


async def test_a_proof_is_accepted_once_among_100_concurrent_requests() -> None:
    """Through an ASGI app, as the server will run it: one proof, one success."""
    pow_ = ProofOfWork(PowConfig(enabled=True, difficulty=8), Clock())

    async def protected(request: Request) -> Response:
        try:
            pow_.verify(request.headers.get(HEADER), CLIENT_KEY)
        except PowRequired:
            return Response(status_code=400)
        return Response(status_code=200)

    app = Starlette(routes=[Route("/check_user/x", protected)])
    issued = pow_.issue(CLIENT_KEY)
    header = {HEADER: f"{issued['challenge']}:{solve(issued['challenge'], 8)}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=URL) as http:
        answers = await asyncio.gather(
            *(http.get("/check_user/x", headers=header) for _ in range(100))
        )
    assert sorted(a.status_code for a in answers) == [200] + [400] * 99


# -- constant-shape resolve misses ------------------------------------------------------------


@pytest.mark.parametrize(
    "plaintext",
    [
        os.urandom(300),
        b"",
        b" " * 300,
        b"null",
        b"[]",
        b'{"a": 1}         ',
        b'{"user_id": "00"}',
    ],
)
def test_a_sealed_non_identity_is_not_found(plaintext: bytes) -> None:
    with sync_client(forging_server(plaintext)) as client:
        assert client.resolve("alice") is None


async def test_async_client_reads_a_constant_shape_miss_as_not_found() -> None:
    transport = httpx.MockTransport(lambda request: sealed_answer(request, os.urandom(250)))
    async with AsyncRegistryClient(URL, PEPPER, transport=transport) as client:
        assert await client.resolve("alice") is None


def test_an_identity_padded_with_spaces_is_found() -> None:
    keys, padded = alice_json(b" " * 500)
    with sync_client(forging_server(padded)) as client:
        assert_identity_of(client.resolve("alice"), "alice", keys)


def test_with_proof_of_work_a_miss_and_a_hit_look_alike() -> None:
    keys, padded = alice_json(b" " * 64)
    server = PowServer(plaintext=os.urandom(len(padded)))
    with sync_client(server.transport()) as client:
        assert client.resolve("alice") is None
        server.plaintext = padded
        assert_identity_of(client.resolve("alice"), "alice", keys)


def test_an_envelope_that_does_not_open_is_still_a_protocol_error() -> None:
    _, padded = alice_json(b" " * 64)
    transport = forging_server(padded)
    with RegistryClient(URL, b"\x07" * 32, transport=transport) as client:  # another pepper
        with pytest.raises(ProtocolError, match="unable to decrypt"):
            client.resolve("alice")


def test_random_ciphertext_is_still_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        req = wire.decode(request.content, wire.ResolveRequest)
        envelope = wire.Envelope.build(
            bytes.fromhex(KID_HEX),
            bytes.fromhex(SERVER_PUBLIC_HEX),
            os.urandom(24),
            os.urandom(300),
        )
        return httpx.Response(200, content=wire.encode(wire.ResolveResponse(req.handle, envelope)))

    with sync_client(httpx.MockTransport(handler)) as client:
        with pytest.raises(ProtocolError, match="unable to decrypt"):
            client.resolve("alice")


def test_a_padded_identity_of_another_handle_is_still_a_protocol_error() -> None:
    bob = IdentityKeys.generate().identity("bob").to_json() + b" " * 64
    with sync_client(forging_server(bob)) as client, pytest.raises(ProtocolError, match="another"):
        client.resolve("alice")


def test_an_invalid_identity_is_still_a_protocol_error() -> None:
    keys = IdentityKeys.generate()
    identity = json.loads(keys.identity("alice").to_json())
    identity["signature"] = []
    invalid = json.dumps(identity).encode()
    with sync_client(forging_server(invalid)) as client, pytest.raises(ProtocolError):
        client.resolve("alice")
