"""A backlog pruned in many batches rewrites each feed segment once, not once per batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from eventstore import retention
from eventstore.filelog import FileLog
from eventstore.filestore import FileStore
from eventstore.follow import Notifier
from eventstore.layout import Layout
from eventstore.verify import verify
from service.operator import prune
from tests.eventstore.test_prune import SMALL_SEGMENT, build


def test_a_backlog_rewrites_each_segment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    jobs = build(data, 120)  # about 20 small segments
    rewrites: Counter[int] = Counter()
    real = retention.rewrite_segment

    def counting(layout: Layout, first: int, nxt: int, drop: Callable[[str], bool]) -> int:
        rewrites[first] += 1
        return real(layout, first, nxt, drop)

    monkeypatch.setattr(retention, "rewrite_segment", counting)
    monkeypatch.setattr(prune, "BATCH", 7)  # 18 batches, across segment bounds

    async def run() -> prune.PruneResult:
        store = FileStore(FileLog(data, segment_bytes=SMALL_SEGMENT), Notifier(), 1.0, None)
        try:
            return await prune.prune_finished(store, datetime.now(UTC))
        finally:
            await store.aclose()

    result = anyio.run(run)
    assert result.jobs == len(jobs)
    assert rewrites and max(rewrites.values()) == 1, rewrites
    assert len(rewrites) >= 10
    log = FileLog(data, readonly=True)
    try:
        left = {e.stream for page in log.iter_all() for e in page}
        assert not left & set(jobs)  # every pruned event left the feed
    finally:
        log.close()
    assert not (data / "feed" / "prune.todo").exists()
    assert verify(data).ok
