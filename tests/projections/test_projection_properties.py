"""Property tests: live == rebuild, resume == rebuild, as-of == prefix, quota never exceeded."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import ANY, NO_STREAM, AppendTo, WrongExpectedVersion, new
from eventstore.events import (
    AnyEvent,
    DocumentAdded,
    DocumentRemoved,
    LeadEvaluated,
    LeadSaved,
    QuotaReserved,
    QuotaSet,
)
from eventstore.records import RecordedEvent
from projections import (
    JobView,
    ProjectionRunner,
    ReadModel,
    SiteSettings,
    UsageTable,
    apply_job,
    apply_settings,
    awaiting_retry,
    decide_reservation,
    fold_as_of,
)

from .builders import (
    T0,
    append_all,
    cancelled,
    completed,
    failed,
    job_id,
    job_stream,
    make_store,
    progressed,
    rebuild,
    requested,
    retried,
    started,
)

SITES = ("site_a", "site_b")
USERS = ("u1", "u2")
LEADS = ("lead_1", "lead_2")
MONTHS = ("2026-01", "2026-02", "2026-03")
JOBS = 5

Item = tuple[str, AnyEvent]


def legal_next(draw: st.DrawFn, view: JobView | None) -> Sequence[AnyEvent]:
    """The events the rules allow next for a job, with drawn details."""
    if view is None:
        return [
            requested(
                draw(st.sampled_from(SITES)),
                draw(st.sampled_from(USERS)),
                draw(st.sampled_from(["ai_evaluation", "report"])),
                max_retries=draw(st.integers(1, 3)),
                metadata={"lead_id": draw(st.sampled_from(LEADS))},
            )
        ]
    attempt = view.attempt
    match view.status:
        case "pending":
            if awaiting_retry(view):
                return [retried(draw(st.integers(1, 99)))] * 4 + [cancelled()]
            return [started(attempt + 1)] * 4 + [cancelled()]
        case "running":
            can_retry = view.retry_count + 1 < view.max_retries
            return [
                progressed(draw(st.integers(0, 100)), draw(st.sampled_from(["", "reading"]))),
                completed({"score": draw(st.integers(0, 100))}),
                failed(attempt, will_retry=can_retry),
                failed(attempt, will_retry=can_retry),
                failed(attempt, code="ResourceNotFound"),
                cancelled(),
            ]
        case "failed" if view.can_retry:
            return [retried(draw(st.integers(1, 99)), manual=True)]
        case _:
            return []


NOISE: list[AnyEvent] = [
    requested(),
    started(),
    started(2),
    progressed(5),
    completed(),
    failed(),
    failed(1, True),
    retried(),
    retried(manual=True),
    cancelled(),
]


@st.composite
def histories(draw: st.DrawFn) -> list[Item]:
    """Legal-ish events over several jobs, sites, leads and months, with some noise."""
    items: list[Item] = []
    views: dict[int, JobView | None] = {}
    for _ in range(draw(st.integers(0, 45))):
        kind = draw(st.sampled_from(["job"] * 6 + ["quota", "reserve", "lead", "doc", "eval"]))
        site = draw(st.sampled_from(SITES))
        lead = f"lead:{site}:{draw(st.sampled_from(LEADS))}"
        event: AnyEvent
        if kind == "job":
            for _ in range(3):  # prefer a job that is not final yet
                n = draw(st.integers(1, JOBS))
                choices = legal_next(draw, views.get(n))
                if choices:
                    break
            noise = draw(st.integers(0, 9)) == 0
            event = draw(st.sampled_from(NOISE if noise or not choices else choices))
            stream = job_stream(n)
            fake = RecordedEvent(0, stream, len(items) + 1, "", T0, event)
            views[n] = apply_job(views.get(n), fake)
        elif kind == "quota":
            limit, month = draw(st.integers(0, 4)), draw(st.sampled_from(MONTHS))
            stream, event = f"site:{site}", QuotaSet(limit=limit, tier="t", from_month=month)
        elif kind == "reserve":
            stream = f"usage:{site}:{draw(st.sampled_from(MONTHS))}"
            event = QuotaReserved(job_id=job_id(draw(st.integers(1, JOBS))))
        elif kind == "lead":
            stream, event = lead, LeadSaved(fields={"n": draw(st.integers(0, 9))})
        elif kind == "doc":
            document_id = draw(st.sampled_from(["d1", "d2"]))
            added = DocumentAdded(
                document_id=document_id,
                document_type="other",
                mime_type="text/plain",
                size=1,
                sha256="0" * 64,
                uploaded_at=T0,
            )
            options: list[AnyEvent] = [added, DocumentRemoved(document_id=document_id)]
            stream, event = lead, draw(st.sampled_from(options))
        else:
            n, score = draw(st.integers(1, JOBS)), draw(st.integers(0, 100))
            stream = lead
            event = LeadEvaluated(job_id=job_id(n), evaluation_id=f"e{n}", score=score, label="C")
        items.append((stream, event))
    return items


@settings(max_examples=60, deadline=None)
@given(items=histories(), yields=st.lists(st.integers(0, 4), min_size=1, max_size=8))
def test_live_projections_equal_a_rebuild(items: list[Item], yields: list[int]) -> None:
    """`yields` interleaves appends and the follower; on a 4, a `catch_up` races it."""

    async def scenario() -> None:
        store = make_store()
        live = ReadModel()
        runner = ProjectionRunner(store, live.projections, page_size=3)
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            for i, (stream, event) in enumerate(items):
                await store.append(stream, [event], ANY)
                pause = yields[i % len(yields)]
                if pause == 4:
                    await runner.catch_up()  # ahead of the follower, which then skips
                for _ in range(pause):
                    await anyio.lowlevel.checkpoint()  # let the runner apply, or not yet
            with anyio.fail_after(5):
                await runner.wait_for(await store.head())
            tg.cancel_scope.cancel()
        assert runner.position == len(items)
        assert live == rebuild(await store.read_all(1, 10_000))

    anyio.run(scenario)


@settings(max_examples=60, deadline=None)
@given(items=histories(), data=st.data())
def test_resuming_from_a_checkpoint_at_any_point_equals_a_rebuild(
    items: list[Item], data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(items)), label="cut")
    settle = data.draw(st.booleans(), label="settle before saving")

    async def scenario(path: Path) -> None:
        store = make_store()
        runner = ProjectionRunner(store, ReadModel().projections, path)
        async with anyio.create_task_group() as tg:
            await tg.start(runner.run)
            await append_all(store, items[:cut])
            if settle:
                with anyio.fail_after(5):
                    await runner.wait_for(cut)
            saved_at = await runner.save_checkpoint()
            await append_all(store, items[cut:])
            tg.cancel_scope.cancel()
        assert saved_at == cut or not settle
        resumed = ReadModel()
        again = ProjectionRunner(store, resumed.projections, path)
        assert await again.load_checkpoint()
        assert again.position == saved_at
        events = await store.read_all(1, 10_000)
        assert resumed == rebuild(events[:saved_at])
        await again.catch_up()
        assert resumed == rebuild(events)

    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(scenario, Path(tmp) / "projections.ckpt")


@settings(max_examples=60, deadline=None)
@given(items=histories(), data=st.data())
def test_as_of_a_position_equals_a_rebuild_of_the_prefix(
    items: list[Item], data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(items) + 1), label="position")
    page_size = data.draw(st.integers(1, 5), label="page_size")

    async def scenario() -> None:
        store = make_store()
        await append_all(store, items)
        as_of = ReadModel()
        assert await fold_as_of(store, as_of.projections, position, page_size=page_size) == min(
            position, len(items)
        )
        prefix = ReadModel()
        await append_all(other := make_store(), items[:position])  # built alike: same clock
        await ProjectionRunner(other, prefix.projections).catch_up()
        assert as_of == prefix == rebuild((await store.read_all(1, 10_000))[:position])

    anyio.run(scenario)


@settings(max_examples=50, deadline=None)
@given(
    limit=st.integers(0, 8),
    requests=st.integers(0, 14),
    pauses=st.lists(st.integers(0, 3), min_size=1, max_size=10),
    preset=st.booleans(),
)
def test_concurrent_creates_never_exceed_the_quota(
    limit: int, requests: int, pauses: list[int], preset: bool
) -> None:
    site, month = "site_a", "2026-11"
    usage_stream, site_stream = f"usage:{site}:{month}", f"site:{site}"

    async def scenario() -> None:
        store = make_store()
        since = month if preset else "2026-01"  # a setting from an earlier month still holds
        await store.append(site_stream, [QuotaSet(limit=limit, tier="t", from_month=since)], 0)
        accepted = rejected = conflicts = 0

        async def client(n: int) -> None:
            nonlocal accepted, rejected, conflicts
            tries = 0
            while True:
                usage_version = await store.stream_version(usage_stream)
                site_settings: SiteSettings | None = None
                for r in await store.read_stream(site_stream):
                    site_settings = apply_settings(site_settings, r)
                for _ in range(pauses[(n + tries) % len(pauses)]):
                    await anyio.lowlevel.checkpoint()  # others read and append meanwhile
                decision = decide_reservation(
                    site,
                    month,
                    usage_version=usage_version,
                    settings=site_settings,
                    job_id=job_id(n),
                    event_id=f"{n:08d}-0000-7000-8000-000000000000",
                )
                if not decision.allowed:
                    rejected += 1
                    return
                job = AppendTo(job_stream(n), [new(requested(site))], NO_STREAM)
                try:
                    await store.append_many([*decision.appends, job])
                except WrongExpectedVersion:
                    conflicts += 1
                    tries += 1
                    continue
                accepted += 1
                return

        async with anyio.create_task_group() as tg:
            for n in range(1, requests + 1):
                tg.start_soon(client, n)
        used = await store.stream_version(usage_stream)
        assert accepted == used == min(requests, limit)
        assert rejected == requests - accepted
        table = UsageTable()
        for r in await store.read_all(1, 10_000):
            table.apply(r)
        usage = table.usage(site, month)
        assert (usage.used, usage.limit, usage.remaining) == (used, limit, limit - used)

    anyio.run(scenario)
