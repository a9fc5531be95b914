"""The `jobtrail` command run as a child of the tools benchmark, with its peak memory.

The peak is the child's whole-process high-water mark of resident memory (VmHWM),
read by the child itself as it exits, after the command returned. Not `wait4`'s
`ru_maxrss`: that also counts the parent's memory, which a forked child holds until
its exec.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PEAK: Final = "bench-peak-kb"

ENTRY: Final = f"""
import sys
from service.cli import main
try:
    code = main(sys.argv[1:])
finally:
    with open("/proc/self/status", encoding="ascii") as status:
        peak = [line.split()[1] for line in status if line.startswith("VmHWM:")]
    sys.stderr.write("\\n{PEAK} " + (peak or ["-1"])[0] + "\\n")
sys.exit(code)
"""
"""What the `jobtrail` console script runs, then the process's VmHWM in kB on stderr."""


@dataclass(frozen=True, slots=True)
class Exited:
    """How a child ended: its exit status, peak RSS, wall time and what it said on stderr."""

    status: int
    peak_rss: int  # bytes; -1 when the child could not tell
    seconds: float
    stderr: str


def run_jobtrail(argv: Sequence[str], cwd: Path, timeout: float) -> Exited:
    """Run `jobtrail *argv` with standard output to /dev/null; killed after `timeout` s."""
    started = time.monotonic()
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.run(
            [sys.executable, "-c", ENTRY, *argv],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=devnull,
            stderr=subprocess.PIPE,
            timeout=timeout,  # kills the child when it runs over
            check=False,
        )
    err = proc.stderr.decode(errors="replace")
    peak = -1
    for line in err.splitlines():
        if line.startswith(PEAK + " "):
            peak = int(line.split()[1]) * 1024
    return Exited(proc.returncode, peak, time.monotonic() - started, err)
