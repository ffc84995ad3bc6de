"""A registryd daemon stops on SIGTERM within ``shutdown_grace_seconds`` + 2 s even when its
Redis is frozen (SIGSTOP) with requests waiting on it: every Redis call and every pool close
is bounded (issue 13, a flaky hang at stop)."""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
from pathlib import Path

import httpx
import pytest

from registryd.certs import DevCerts
from tests.redis_support import RedisServer
from tests.test_scaleout import daemons, tls_redis  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e
GRACE_S = 3  # tests.test_scaleout.write's shutdown_grace_seconds
SHARED = '[pow]\nenabled = true\ndifficulty = 4\n[rate_limit]\nstorage_uri = "{redis}"\n'


async def test_sigterm_with_redis_frozen_mid_request_exits_0_within_the_grace(
    tmp_path: Path,
    tls_redis: RedisServer,  # noqa: F811
    certs: DevCerts,
) -> None:
    tables = SHARED + "per_ip_rps = 1000\nburst = 1000\n"
    with daemons(tmp_path, tls_redis, certs, tables, n=1) as (d,):
        verify = ssl.create_default_context(cafile=certs.ca)
        async with httpx.AsyncClient(verify=verify, base_url=d.url, timeout=30) as http:
            # every pool (storage, limiter, proof of work) holds a connection to Redis
            assert (await http.get("/pow/challenge")).status_code == 200
            assert (await http.get("/health")).status_code == 200
            tls_redis.pause()
            try:
                waiting = [
                    asyncio.create_task(http.get(path))
                    for path in ("/health", f"/check_user/{'ab' * 32}", "/pow/challenge") * 4
                ]
                await asyncio.sleep(0.2)
                started = time.monotonic()
                d.proc.send_signal(signal.SIGTERM)
                while d.proc.poll() is None and time.monotonic() - started < 30:
                    await asyncio.sleep(0.05)
                took = time.monotonic() - started
                await asyncio.gather(*waiting, return_exceptions=True)
            finally:
                tls_redis.pause(False)
        assert d.wait() == 0, d.log
    assert took < GRACE_S + 2, f"stopped {took:.1f} s after SIGTERM:\n{d.log}"
    assert "Traceback" not in d.log
