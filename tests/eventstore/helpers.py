"""Small builders for store tests."""

from __future__ import annotations

from eventstore import streams
from eventstore.events import JobProgressed, JobRequested
from eventstore.records import uuid7


def job_stream() -> str:
    return streams.job(str(uuid7()))


def requested(site: str = "s1", user: str = "u1") -> JobRequested:
    return JobRequested(job_type="noop", site_id=site, user_id=user)


def progressed(n: int) -> JobProgressed:
    return JobProgressed(progress=n % 101, message=f"step {n}")
