"""How much CPU other work on the machine took during a measurement (Linux ``/proc``).

On a 2-core machine any other busy process takes capacity from the server or the load
generator, and every figure measured then is low. :class:`ForeignCpu` compares the machine's
busy time (``/proc/stat``) with the CPU time of this process tree (this process, its live
descendants and the children it has reaped) over an interval; the difference, in cores, is what
everything else used. It is reported beside each peak run so a skewed figure can be recognised.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
BUSY_CORES = 0.25  # other work above this during a run skews it: retried, flagged in the table


def machine_busy_ticks() -> int:
    """All CPUs' non-idle time since boot, in clock ticks (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle  # user..steal; guest time is already inside user


def _stat(pid: str) -> tuple[int, int] | None:
    """(parent pid, CPU ticks of the process and its reaped children), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), sum(int(x) for x in fields[11:15])  # utime stime cutime cstime


def tree_ticks(root: int) -> int:
    """CPU ticks of ``root`` and all its live descendants (reaped ones are in cutime)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(entry)
            if found is not None:
                stats[int(entry)] = found
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


class ForeignCpu:
    """Started at construction; :meth:`cores` is the average number of cores that processes
    outside this process tree kept busy since then."""

    def __init__(self) -> None:
        self._root = os.getpid()
        self._wall = time.monotonic()
        self._busy = machine_busy_ticks()
        self._ours = tree_ticks(self._root)

    def cores(self) -> float:
        wall = time.monotonic() - self._wall
        busy = machine_busy_ticks() - self._busy
        ours = tree_ticks(self._root) - self._ours
        if wall <= 0:
            return 0.0
        return max(0.0, (busy - ours) / TICKS_PER_S / wall)
