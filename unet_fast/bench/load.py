"""How busy the machine was while a benchmark ran: the 1-min load average against the core count at the
start and the end, and the CPU time other processes took during the run (from /proc: the whole machine's
busy time minus this process tree's), with the biggest competitors named.

Why: on a shared machine the same benchmark swung from 0.73x to 1.76x of eager between two runs and said
nothing. A figure taken under load is not a clean figure; the run must say so, loudly, and record it.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from unet_fast.bench.machine import load_average

_PROC = Path("/proc")
# Busy when other processes take this much CPU on average over the run (cores), or when the 1-min load
# average at the start is this high: either steals time slices from the contenders.
OTHERS_BUSY_CORES = 0.25  # or 10% of the cores, whichever is more
LOAD_BUSY = 0.5  # or 25% of the cores, whichever is more
CLEAN_HOWTO = ("for a clean figure: stop the other jobs (`top` shows them), wait until `uptime` shows a 1-min "
               "load average below 0.5, then run again; give --threads fewer than the cores if something must "
               "keep running, and --note the conditions")  # fmt: skip


@dataclass
class Snapshot:
    wall: float
    load_1min: float | None
    busy_ticks: int | None  # whole machine, from /proc/stat
    procs: dict[int, tuple[int, str, int]] = field(default_factory=dict)  # pid -> (ppid, name, cpu ticks)


def _read_stat_busy() -> int | None:
    try:
        fields = (_PROC / "stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    vals = [int(v) for v in fields]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    guest = sum(vals[8:10]) if len(vals) > 9 else 0  # guest time is already counted in user/nice
    return sum(vals) - idle - guest


def _read_procs() -> dict[int, tuple[int, str, int]]:
    out: dict[int, tuple[int, str, int]] = {}
    try:
        entries = list(_PROC.iterdir())
    except OSError:
        return out
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:  # exited meanwhile, or not ours to read
            continue
        name = raw[raw.find("(") + 1 : raw.rfind(")")]
        rest = raw[raw.rfind(")") + 2 :].split()
        # after the name: state ppid ... utime (14th field overall) stime (15th)
        out[int(entry.name)] = (int(rest[1]), name, int(rest[11]) + int(rest[12]))
    return out


def snapshot() -> Snapshot:
    return Snapshot(time.monotonic(), load_average(), _read_stat_busy(), _read_procs())


def start_warning(start: Snapshot, cores: int | None = None) -> str:
    """A line to print before a run that starts on a loaded machine ('' when the load is low)."""
    cores = cores or os.cpu_count() or 1
    if start.load_1min is None or start.load_1min < max(LOAD_BUSY, 0.25 * cores):
        return ""
    return (f"WARNING: the 1-min load average is {start.load_1min} on {cores} cores: other work is running, "
            "the timings will not be a clean figure (checked again at the end)")  # fmt: skip


def _command(pid: int) -> str:
    """The start of a process's command line ('' when it has exited or is not readable)."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return text if len(text) <= 80 else text[:77] + "..."


def _descendants(root: int, procs: dict[int, tuple[int, str, int]]) -> set[int]:
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, (ppid, _, _) in procs.items() if ppid in tree and pid not in tree}
        tree |= new
        grew = bool(new)
    return tree


@dataclass
class LoadReport:
    cores: int
    wall_s: float
    load_1min_start: float | None
    load_1min_end: float | None
    others_cores: float | None  # CPUs other processes used on average during the run
    competitors: list[dict]  # the biggest: {"pid", "name", "cpu_s"}
    busy: bool
    reasons: list[str]

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for a results file."""
        state = "BUSY" if self.busy else "quiet"
        return f"{state}: " + "; ".join(self.reasons or [self._figures()])

    def _figures(self) -> str:
        parts = []
        if self.others_cores is not None:
            parts.append(f"other processes used {self.others_cores:.2f} of {self.cores} cores on average")
        if self.load_1min_start is not None:
            parts.append(f"1-min load average {self.load_1min_start} at the start, {self.load_1min_end} at the end")
        return ", ".join(parts) or "not measurable here (no /proc, no load average)"

    def warning_lines(self) -> list[str]:
        """The loud block printed after the table of a busy run (empty for a quiet one)."""
        if not self.busy:
            return []
        lines = [f"WARNING: BUSY MACHINE: {'; '.join(self.reasons)}."]
        if self.competitors:
            top = ", ".join(f"{c['name']} (pid {c['pid']}, {c['cpu_s']:.1f} s CPU{': ' + c['command'] if c.get('command') else ''})"
                            for c in self.competitors)  # fmt: skip
            lines.append(f"WARNING: biggest competitors during the run: {top}.")
        lines.append("WARNING: these timings are NOT a clean figure: under load the same run can swing by 2x, "
                     "and ratios between contenders shift too (interleaved rounds spread the load, they do not "
                     "remove it).")  # fmt: skip
        lines.append(f"WARNING: {CLEAN_HOWTO}.")
        return ["!" * 100, *lines, "!" * 100]


def assess(start: Snapshot, end: Snapshot, cores: int | None = None, me: int | None = None) -> LoadReport:
    """Compare two snapshots around a run. `me`: the root of the process tree whose CPU is the run's own
    (default: this process; torch.compile's worker processes are its children)."""
    cores = cores or os.cpu_count() or 1
    me = os.getpid() if me is None else me
    wall = max(end.wall - start.wall, 1e-9)
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    others_cores = None
    competitors: list[dict] = []
    if start.busy_ticks is not None and end.busy_ticks is not None and end.procs:
        ours = _descendants(me, end.procs) | _descendants(me, start.procs)
        deltas = {pid: cpu - start.procs.get(pid, (0, "", 0))[2] for pid, (_, _, cpu) in end.procs.items()}
        own_ticks = sum(d for pid, d in deltas.items() if pid in ours)
        others_ticks = max(0, end.busy_ticks - start.busy_ticks - own_ticks)
        others_cores = round(others_ticks / hz / wall, 2)
        top = sorted(((d, pid) for pid, d in deltas.items() if pid not in ours and d > 0), reverse=True)[:3]
        competitors = [{"pid": pid, "name": end.procs[pid][1], "cpu_s": round(d / hz, 1), "command": _command(pid)}
                       for d, pid in top if d / hz >= 0.05 * wall]  # fmt: skip
    reasons = []
    if others_cores is not None and others_cores >= max(OTHERS_BUSY_CORES, 0.1 * cores):
        reasons.append(f"other processes used {others_cores:.2f} of {cores} cores on average during the run "
                       f"({wall:.0f} s)")  # fmt: skip
    load_limit = max(LOAD_BUSY, 0.25 * cores)
    if start.load_1min is not None and start.load_1min >= load_limit:
        reasons.append(f"the 1-min load average was {start.load_1min} on {cores} cores at the start "
                       f"({end.load_1min} at the end)")  # fmt: skip
    return LoadReport(cores, round(wall, 1), start.load_1min, end.load_1min, others_cores, competitors,
                      bool(reasons), reasons)  # fmt: skip
