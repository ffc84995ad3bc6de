"""The directory prober with 500 slow nodes: round time, overlap, concurrency, loop stalls.

    .venv/bin/python -m bench.prober [--nodes 500] [--concurrency 16] [--timeout-ms 500]

Targets (extensions spec §3.5, issue 11): a round of N nodes finishes within
``ceil(N / concurrency) * timeout``; rounds never overlap; the event loop running the prober
never stalls longer than 20 ms.

Set-up, in two processes so the nodes' work never runs on the prober's loop:

1. ``--serve-nodes`` (a child process) answers ``GET /n<i>/health`` on 127.0.0.2:0 after a
   delay fixed per node, 30-90 % of the timeout, and never answers every tenth node (so those
   probes time out); it counts connections in flight (until answered or closed by the prober)
   and reports the maximum when its stdin closes.
2. This process writes N node records straight into a LevelDB storage (the registration path is
   tested in tests/; here only probing is measured), all pointing at the child with
   ``probe_allow_cidrs = ["127.0.0.2/32"]``, and runs the real prober loop
   (``Prober.run``, interval 1 s, so rounds run back to back) for ``--rounds`` rounds, while a
   task that sleeps 5 ms records how late it wakes (:class:`bench.gc_stall.LagProbe`). The heap
   is settled first as the daemon does (:func:`registryd.server.settle_heap`).

Prints one JSON object; exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from registryd import config as config_mod
from registryd.directory.prober import RoundStats
from registryd.directory.records import NodeRecord, encode
from registryd.keystore import load_keyring
from registryd.runtime import Runtime
from registryd.server import settle_heap
from registryd.storage.leveldb import LevelDBStorage
from registryd.storage.records import DirectoryNode

from .configs import Secrets, Setup, config_text
from .gc_stall import LagProbe, summary
from .procs import REPO

NODE_IP = "127.0.0.2"
STALL_TARGET_MS = 20.0


def delay_of(index: int, timeout_s: float, slowest: float = 0.9) -> float | None:
    """How long node ``index`` takes to answer, from 30 % to ``slowest`` of the timeout; None
    (never) for every tenth node."""
    if index % 10 == 9:
        return None
    return timeout_s * (0.3 + (slowest - 0.3) * ((index * 7919) % 101) / 100)


async def serve_nodes(timeout_s: float, slowest: float) -> None:
    in_flight = peak = served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal in_flight, peak, served
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            index = int(head.split(b" ", 2)[1].split(b"/")[1][1:])
            # wait out the delay, unless the prober gives up and closes first (EOF)
            with contextlib.suppress(TimeoutError):
                delay = delay_of(index, timeout_s, slowest)
                if await asyncio.wait_for(reader.read(1), delay) == b"":
                    return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
            served += 1
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
            pass
        finally:
            in_flight -= 1
            writer.close()

    server = await asyncio.start_server(handle, NODE_IP, 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    for _ in range(500):  # the prober has closed its connections: let the handlers see it
        if in_flight == 0:
            break
        await asyncio.sleep(0.01)
    server.close()
    print(json.dumps({"max_in_flight": peak, "answered": served}), flush=True)


def _records(count: int, port: int) -> list[DirectoryNode]:
    nodes = []
    for i in range(count):
        host = f"node{i}.bench.test"
        record = NodeRecord(
            name=f"node {i}",
            host=host,
            ip=NODE_IP,
            api_base_url=f"http://{NODE_IP}:{port}/n{i}",
            protocol_version="0.0.1",
            features=msgspec.Raw(b"{}"),
            pubkey_b64="",
            registered_at_ms=0,
        )
        nodes.append(DirectoryNode(host, i.to_bytes(32, "big"), encode(record), b""))
    return nodes


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    timeout_s = args.timeout_ms / 1000
    child = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "bench.prober",
            "--serve-nodes",
            "--timeout-ms",
            str(args.timeout_ms),
            "--slowest",
            str(args.slowest),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert child.stdout is not None and child.stdin is not None
    port = int(child.stdout.readline())
    table = (
        f"probe_interval_seconds = 1\nprobe_concurrency = {args.concurrency}\n"
        f'probe_timeout_ms = {args.timeout_ms}\nprobe_allow_cidrs = ["{NODE_IP}/32"]\n'
    )
    text = config_text(
        Secrets.generate(), Setup("leveldb", "http"), data_dir=work / "db", directory=table
    )
    config = config_mod.parse(text)
    storage = LevelDBStorage(config.index_key(), work / "db")
    rounds: list[RoundStats] = []
    try:
        for node in _records(args.nodes, port):
            await storage.put_directory_node(node)
        clock = lambda: int(time.time() * 1000)  # noqa: E731
        directory = Runtime(config, storage, load_keyring(config.envelope), clock).directory
        done = asyncio.Event()

        def on_round(stats: RoundStats) -> None:
            rounds.append(stats)
            if len(rounds) >= args.rounds:
                done.set()

        directory.prober.on_round = on_round
        settle_heap()  # as registryd.server.serve does before serving
        probe = LagProbe()
        probe_task = asyncio.create_task(probe.run())
        await asyncio.sleep(0.2)
        probe.window()
        async with directory.running(probe=True):
            await done.wait()
        stalls = summary(probe.window())
        probe_task.cancel()
    finally:
        await storage.close()
        child.stdin.close()
        server = json.loads(child.stdout.readline() or "{}")
        child.stdout.close()
        child.wait(30)
    bound_s = math.ceil(args.nodes / args.concurrency) * timeout_s
    overlaps = sum(b.started < a.ended for a, b in itertools.pairwise(rounds))
    expected_online = sum(delay_of(i, timeout_s) is not None for i in range(args.nodes))
    result: dict[str, Any] = {
        "nodes": args.nodes,
        "concurrency": args.concurrency,
        "timeout_ms": args.timeout_ms,
        "round_bound_s": round(bound_s, 3),
        "rounds": [
            {"duration_s": round(r.duration_s, 3), "online": r.online, "offline": r.offline}
            for r in rounds
        ],
        "expected_online": expected_online,
        "overlaps": overlaps,
        "max_stall_ms": stalls["max_ms"],
        "stall_p99_ms": stalls["p99_ms"],
        "stall_samples": stalls["samples"],
        "server_max_in_flight": server.get("max_in_flight"),
    }
    result["targets_met"] = bool(
        all(r.duration_s <= bound_s for r in rounds)
        and overlaps == 0
        and stalls["max_ms"] <= STALL_TARGET_MS
        and (server.get("max_in_flight") or 0) <= args.concurrency
        and all(r.online == expected_online for r in rounds)
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Directory prober: rounds, overlap, stalls.")
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--timeout-ms", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--slowest",
        type=float,
        default=0.9,
        help="the slowest node answers after this share of the timeout (default 0.9)",
    )
    parser.add_argument("--serve-nodes", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_nodes:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_nodes(args.timeout_ms / 1000, args.slowest))
        return 0
    with tempfile.TemporaryDirectory(prefix="registryd-bench-prober-") as tmp:
        result = asyncio.run(measure(args, Path(tmp)))
    json.dump(result, sys.stdout)
    print()
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
