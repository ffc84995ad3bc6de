"""Server subprocesses (the daemon, the floor): started, their URL read from the log, stopped.

A server logs ``... listening on URL`` once its socket is bound to ``127.0.0.1:0``; its output
goes to a log file (never a pipe that could fill up), which is polled for that line. Every
process started here is stopped by its PID in a ``finally``: SIGTERM, then SIGKILL if it has not
exited within the grace period; and should the harness itself be killed, the kernel sends the
servers SIGTERM (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

_LISTENING = re.compile(r"listening on (\S+)")
REPO = Path(__file__).resolve().parents[1]  # so `python -m bench.floor` imports from any cwd
START_TIMEOUT_S = 120.0  # a daemon opening a large LevelDB can take a while
STOP_TIMEOUT_S = 30.0
PR_SET_PDEATHSIG = 1


class ServerFailed(RuntimeError):
    """A server did not start (exited, or printed no URL in time)."""


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the harness dies, even by SIGKILL (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux/glibc: the finally blocks still stop the servers


def python_module(module: str, *args: str) -> list[str]:
    """The argv of ``python -m module args...`` with this interpreter (the venv's)."""
    return [sys.executable, "-m", module, *args]


def daemon_argv(config_path: Path) -> list[str]:
    return python_module("registryd", "serve", "--config", str(config_path), "--log-level", "info")


def floor_argv(config_path: Path) -> list[str]:
    return python_module("bench.floor", "--config", str(config_path))


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int | None:
    """Stop ``proc`` by PID: SIGTERM, then SIGKILL after ``timeout`` s; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@contextlib.contextmanager
def server(argv: list[str], log_path: Path, timeout: float = START_TIMEOUT_S) -> Iterator[str]:
    """Run ``argv`` until the block ends; yields the URL from its ``listening on`` log line."""
    with started(argv, log_path, timeout) as (url, _):
        yield url


@contextlib.contextmanager
def started(
    argv: list[str], log_path: Path, timeout: float = START_TIMEOUT_S, cwd: Path = REPO
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`server`, yielding the process too (for its PID); ``cwd``: another checkout's
    code (:mod:`bench.ab`)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - argv built here from our own arguments
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, preexec_fn=_die_with_parent
        )
    try:
        yield _wait_for_url(proc, log_path, timeout), proc
    finally:
        stop(proc)


def _wait_for_url(proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _LISTENING.search(log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        if proc.poll() is not None:
            raise ServerFailed(f"{proc.args!r} exited with {proc.returncode}:\n{_tail(log_path)}")
        time.sleep(0.05)
    raise ServerFailed(f"{proc.args!r} printed no URL in {timeout:.0f} s:\n{_tail(log_path)}")
