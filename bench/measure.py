"""Wall time and peak memory of a contender's process tree.

The harness starts every process a contender needs as its own child, one contender at a
time, so "the contender's process tree" is every live descendant of the harness. A sampler
thread sums their resident set sizes every 50 ms (psutil) and keeps the peak. RSS counts
shared pages (libraries) once per process, so a tree of several processes reads a little high.
A run shorter than one interval may end before the first sample (reported as "-").
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

INTERVAL = 0.05
MiB = 1024 * 1024


class TreeSampler:
    """Peak summed RSS of the harness's descendants while the ``with`` block runs."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._me = psutil.Process(os.getpid())
        self._cmdline = self._me.cmdline()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _sample(self) -> None:
        total = 0
        try:
            children = self._me.children(recursive=True)
        except psutil.Error:
            return
        for p in children:
            try:
                if p.cmdline() == self._cmdline:
                    continue  # forked but not yet exec'd: a copy of the harness, not the contender
                total += p.memory_info().rss
            except psutil.Error:
                pass
        self.samples += 1
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


class StepError(RuntimeError):
    """A contender's command failed: its argv (no secrets in it) and the tail of its output."""


@dataclass
class Cmd:
    """One process of a contender's run: argv, environment, and optionally stdin from a file."""

    argv: list[str]
    env: dict[str, str] | None = None
    cwd: Path | None = None
    stdin_file: Path | None = None
    capture: bool = False  # keep stdout (e.g. a watermark read by psql)


@dataclass
class Outcome:
    seconds: float
    peak_rss: int
    output: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def _tail(text: str | bytes | None, n: int = 1500) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text[-n:]


def _spawn(cmd: Cmd, stdin: Any) -> tuple[subprocess.Popen, dict[str, bytes], list[threading.Thread]]:
    p = subprocess.Popen(
        cmd.argv, env=cmd.env, cwd=cmd.cwd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    bufs: dict[str, bytes] = {}

    def read(name: str, f) -> None:  # noqa: ANN001
        bufs[name] = f.read()

    readers = [
        threading.Thread(target=read, args=("out", p.stdout)),
        threading.Thread(target=read, args=("err", p.stderr)),
    ]
    for t in readers:
        t.start()
    return p, bufs, readers


def _reap(p: subprocess.Popen, readers: list[threading.Thread], timeout: float) -> bool:
    """Wait for ``p``; False when it had to be killed at the timeout."""
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        p.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status = os.waitpid(p.pid, 0)
    finally:
        timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join(timeout=10)
    return not fired.is_set()


def run_cmd(cmd: Cmd, timeout: float) -> str:
    """Run one process to the end; raise StepError on a non-zero exit. Returns its stdout."""
    stdin = open(cmd.stdin_file, "rb") if cmd.stdin_file else subprocess.DEVNULL  # noqa: SIM115
    try:
        p, bufs, readers = _spawn(cmd, stdin)
        finished = _reap(p, readers, timeout)
    finally:
        if cmd.stdin_file:
            stdin.close()  # type: ignore[union-attr]
    name = Path(cmd.argv[0]).name
    if not finished:
        raise StepError(f"{name} timed out after {timeout:.0f} s")
    if p.returncode != 0:
        raise StepError(
            f"{name} exited {p.returncode}: {_tail(bufs.get('err')) or _tail(bufs.get('out'))}".strip()
        )
    return bufs.get("out", b"").decode(errors="replace")


def run_pipe(left: Cmd, right: Cmd, timeout: float) -> None:
    """``left | right``: two processes joined by a pipe made here (no shell)."""
    p1 = subprocess.Popen(
        left.argv,
        env=left.env,
        cwd=left.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p1.stdout is not None
    err1: dict[str, bytes] = {}
    r1 = threading.Thread(target=lambda: err1.setdefault("err", p1.stderr.read() if p1.stderr else b""))
    r1.start()
    try:
        p2, bufs2, readers2 = _spawn(right, p1.stdout)
    finally:
        p1.stdout.close()  # p2 holds the read end; p1 gets SIGPIPE if p2 dies
    ok2 = _reap(p2, readers2, timeout)
    if not ok2:
        p1.kill()
    ok1 = _reap(p1, [r1], timeout)
    if not (ok1 and ok2):
        raise StepError(f"pipe timed out after {timeout:.0f} s")
    if p1.returncode != 0 or p2.returncode != 0:
        raise StepError(
            f"pipe failed: {Path(left.argv[0]).name} exit {p1.returncode}: {_tail(err1.get('err'))}; "
            f"{Path(right.argv[0]).name} exit {p2.returncode}: {_tail(bufs2.get('err')) or _tail(bufs2.get('out'))}"
        )


def measure(body: Callable[[], str | None], interval: float = INTERVAL) -> Outcome:
    """Time ``body`` (which starts the contender's processes) and sample their tree's RSS."""
    with TreeSampler(interval) as s:
        t0 = time.perf_counter()
        out = body()
        seconds = time.perf_counter() - t0
    # Not ru_maxrss: on Linux a forked child's high-water mark includes the harness's own
    # memory from before exec (measured: 42 MiB for a sqlite3 CLI run). 0 = never sampled.
    return Outcome(seconds=seconds, peak_rss=s.peak, output=out or "")


def run_cmds(cmds: Sequence[Cmd], timeout: float) -> str:
    out = []
    for c in cmds:
        out.append(run_cmd(c, timeout))
    return "".join(out)
