"""`verify` beside a live prune in another process: no crash, no false finding.

verify takes no lock; a prune may unlink a stream log between verify's listing of the
logs and its read of one, or land after verify's feed walk but before its stream walk.
Neither is damage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from eventstore.filelog import FileLog
from eventstore.verify import verify
from tests.eventstore.helpers import REPO
from tests.eventstore.test_prune import SMALL_SEGMENT, build, prune_batch


def pruner(data: str, jobs_file: str) -> None:
    """Child: prune the listed jobs one or two at a time, briefly pausing in between."""
    log = FileLog(Path(data), segment_bytes=SMALL_SEGMENT)
    jobs = json.loads(Path(jobs_file).read_text())
    print("READY", flush=True)
    deadline = time.monotonic() + 30
    for i in range(0, len(jobs), 2):
        if time.monotonic() > deadline:
            break
        log.prune(prune_batch(jobs[i : i + 2]))
        time.sleep(0.003)
    log.close()
    print("DONE", flush=True)


def test_verify_beside_a_pruner_in_another_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jobs = build(data, 240)
    jobs_file = tmp_path / "victims.json"
    jobs_file.write_text(json.dumps(jobs[:200]))
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.eventstore.test_verify_beside_prune", data, jobs_file],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    bad: list[str] = []
    runs = 0
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        deadline = time.monotonic() + 40
        while child.poll() is None and time.monotonic() < deadline:
            runs += 1
            try:
                report = verify(data)
            except Exception as exc:  # noqa: BLE001 - a crash is what this test looks for
                bad.append(f"crash: {exc!r}")
                continue
            bad.extend(str(f) for f in report.findings if f.severity == "error")
        child.communicate(timeout=40)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert runs >= 5
    assert bad == [], f"{len(bad)} bad in {runs} runs: {bad[:3]}"
    assert verify(data).ok


if __name__ == "__main__":
    pruner(sys.argv[1], sys.argv[2])
