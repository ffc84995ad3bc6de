"""Secret-safe logs (extensions spec §4): a full run through success, conflict, a 503 storm,
unreachable and oversized answers, other 4xx and a forgotten node, logged at DEBUG for every
logger, shows no private key in any encoding, the public key only as its 16-character prefix,
and no more than 512 bytes of any answer."""

from __future__ import annotations

import logging
import random
import secrets
from pathlib import Path

import pytest

from registryd.node import RegistrationAgent, load_config
from tests.node_fake import (
    DOWN,
    HOST,
    FakeDirectory,
    FakeTime,
    Fault,
    encodings,
    make_node,
    private_forms,
    run_until,
)

MAX_LOGGED_BODY = 512


def leaked_window(body: str, text: str) -> bool:
    """Whether more than 512 consecutive characters of ``body`` appear in ``text``."""
    n = MAX_LOGGED_BODY + 1
    return any(body[i : i + n] in text for i in range(0, len(body) - n + 1))


async def test_a_full_run_logs_no_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    time = FakeTime()
    directory = FakeDirectory(time)
    config = load_config(make_node(tmp_path, "http://registry.test", max_retry=4))
    agent = RegistrationAgent(
        config,
        transport=directory.transport(),
        clock=time,
        sleep=time.sleep,
        rng=random.Random(7),  # noqa: S311 (jitter only)
    )
    bodies = {name: secrets.token_hex(1024) for name in ("conflict", "storm", "html", "message")}

    def script(n: int) -> None:
        if n == 1:  # parked after success: the next heartbeat is a conflict
            directory.fail("heartbeat", Fault(409, body=bodies["conflict"].encode()))
        if n == 2:  # a 503 storm, the registry down, an oversized answer
            directory.fail(
                "challenge",
                Fault(503, {"retry-after": "1"}, bodies["storm"].encode()),
                DOWN,
                Fault(503, body=b"y" * (70 * 1024)),
            )
        if n == 5:  # pause (max_retry = 4), then other 4xx
            directory.fail(
                "register",
                Fault(404, body=bodies["html"].encode()),
                Fault(
                    400, body=b'{"error":{"code":"X","message":"%s"}}' % bodies["message"].encode()
                ),
            )
        if n == 9:
            directory.forget(HOST)  # 401 on the next heartbeat

    with caplog.at_level(logging.DEBUG):
        await run_until(agent, time, 11, script)

    assert directory.count("heartbeat", 401) == 1 and directory.count("register") == 3
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    state_file = Path(config.state_path).read_text()
    for form in private_forms(Path(config.key_path)):
        assert form not in text and form not in state_file
    pubkey = agent.key.public_key
    for form in encodings(pubkey):
        assert form not in text and form not in state_file
    assert agent.key.pubkey_b64[:17] not in text
    assert agent.key.pubkey_b64[:16] in text  # the prefix is what identifies the node
    for body in bodies.values():
        assert not leaked_window(body, text)
    assert bodies["conflict"][:100] in text  # answers are quoted, just not at length
    assert "y" * 513 not in text
    assert "refused (conflict" in text and "pausing" in text and "refused (slow retry" in text
