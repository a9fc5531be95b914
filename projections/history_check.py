"""The job rules checked over whole histories: illegal transitions and version gaps.

`jobtrail verify` feeds it the global feed once, in order. Per job it keeps only what the
rules look at (status, attempt, retries, whether a retry is awaited), not a `JobView`:
folding whole views was most of the check's time. `_step` is `rules.illegal_transition`
followed by the status part of `jobs.apply_job`, on that small state; a test holds the
two to the same answers. Like the fold, it never raises.

It reads full envelopes (`records.RecordedEvent`) and the light ones of `rule_events`
alike: both carry the fields the rules use under the same names.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from typing import Any, Final, Protocol

import msgspec

from eventstore.events import AnyEvent
from eventstore.verify import Finding
from projections.jobs import FINAL
from projections.rule_events import AnyRuleEvent

MAX_FINDINGS: Final = 1000
"""Findings listed in full; the rest are counted in one more finding."""

_OTHER_SITE: Final = -1
"""The state of a job of a site the check was narrowed away from: skipped."""

_NO_JOB: Final = False
"""The state of a stream that is no job's: only its tombstones count."""

_TAGS: Final[dict[type, str]] = {
    **{cls: cls.__struct_config__.tag for cls in typing.get_args(AnyEvent)},
    **{cls: cls.type for cls in typing.get_args(AnyRuleEvent)},
}
"""The stored tag of each event class, full or light."""

_TOMBSTONES: Final = frozenset(cls for cls, tag in _TAGS.items() if tag == "job_pruned")


class Recorded(Protocol):
    """An envelope as the check reads it: `RecordedEvent` or `rule_events.RuleEnvelope`."""

    @property
    def position(self) -> int: ...
    @property
    def stream(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def event(self) -> Any: ...


class _Job(msgspec.Struct, gc=False):
    """What the rules look at of a requested job (the fields of `JobView` they read).

    Not tracked by the garbage collector (it holds no container): a check keeps one per
    job, and 100,000s of tracked objects made each full collection slow the walk.
    """

    version: int
    max_retries: int
    status: str = "pending"
    attempt: int = 0
    retry_count: int = 0
    error: bool = False  # `error_code is not None`
    scheduled: bool = False  # `next_attempt_at is not None`


class HistoryCheck:
    """Checks every job stream of the feed it is given, page by page, in feed order.

    `site` narrows the check to that site's jobs; a job stream that does not start with
    `requested` names no site, so it is checked only when the check is not narrowed.
    """

    def __init__(self, site: str | None = None, *, max_findings: int = MAX_FINDINGS) -> None:
        self.site = site
        self.max_findings = max_findings
        self.findings: list[Finding] = []
        self.events = 0  # job events checked
        self.position = 0  # the last position seen
        self.unlisted = 0
        # Per job stream: its state; or, before `requested`, the version reached (an int);
        # _OTHER_SITE or, for any other stream, _NO_JOB.
        self._jobs: dict[str, _Job | int | bool] = {}
        self._skipped = 0  # of them _OTHER_SITE or _NO_JOB

    @property
    def jobs(self) -> int:
        """How many job streams were checked."""
        return len(self._jobs) - self._skipped

    def check(self, events: Iterable[Recorded]) -> None:
        """Fold a page of the feed in; findings accumulate in `findings`."""
        jobs = self._jobs
        get = jobs.get
        tags = _TAGS
        position = self.position
        checked = 0
        for e in events:
            position = e.position
            stream = e.stream
            state = get(stream)
            if isinstance(state, _Job):  # the common case: a requested job of the check
                event = e.event
                now = e.version
                checked += 1
                if now != state.version + 1:
                    self._add("gap", stream, f"version {now} follows {state.version}")
                rule = _step(state, tags[type(event)], event)
                state.version = now
                if rule is not None:
                    self._add("illegal_transition", stream, f"version {now}: {rule}")
            elif state is _NO_JOB:
                if type(e.event) in _TOMBSTONES:
                    self._forget(e.event.job_id)
            elif state != _OTHER_SITE:
                checked += self._other(e, state)
        self.events += checked
        self.position = position

    def _other(self, e: Recorded, state: int | bool | None) -> int:
        """An event of any other stream, or of a job not (yet) requested: how many checked."""
        event = e.event
        tag = _TAGS[type(event)]
        stream = e.stream
        if not stream.startswith("job:"):
            self._jobs[stream] = _NO_JOB
            self._skipped += 1
            if tag == "job_pruned":
                self._forget(event.job_id)
            return 0
        if state is None and self.site is not None:
            if not (tag == "requested" and event.site_id == self.site):
                self._jobs[stream] = _OTHER_SITE
                self._skipped += 1
                return 0
        version = state or 0
        now = e.version
        if now != version + 1:
            self._add("gap", stream, f"version {now} follows {version}")
        if tag == "requested":
            self._jobs[stream] = _Job(now, event.max_retries)
        else:
            self._add("illegal_transition", stream, f"version {now}: {tag} before requested")
            self._jobs[stream] = now
        return 1

    def _forget(self, job_id: str) -> None:
        """A job retention removed: what is left of it in the feed is no finding.

        A prune that died half way leaves some of the job's events and not others.
        """
        stream = f"job:{job_id}"
        if self._jobs.pop(stream, None) == _OTHER_SITE:
            self._skipped -= 1
        self.findings = [f for f in self.findings if f.where != stream]

    def _add(self, kind: str, where: str, detail: str) -> None:
        if len(self.findings) < self.max_findings:
            self.findings.append(Finding("error", kind, where, detail))
        else:
            self.unlisted += 1

    def report(self) -> list[Finding]:
        """The findings, with one more that counts those not listed."""
        if not self.unlisted:
            return list(self.findings)
        more = Finding(
            "error",
            "illegal_transition",
            "jobs",
            f"{self.unlisted} more broken rules not listed (the first {self.max_findings} are)",
        )
        return [*self.findings, more]


def _step(job: _Job, tag: str, event: Any) -> str | None:
    """The rule `event` breaks (as `rules.illegal_transition` names it), then apply it.

    The cases follow `illegal_transition`, each followed by what `jobs._next` changes of
    the fields the rules read; an event `_next` ignores changes none of them.
    """
    status = job.status
    final = status in FINAL
    if tag == "progressed" or tag == "cancel_requested":
        if final:
            return f"{tag} after {status}"
        return None if status == "running" else f"{tag} while {status}"
    if tag == "started":
        if final:
            return f"started after {status}"
        if status == "running":
            return "started while running"
        rule = None
        if status == "pending" and job.error and not job.scheduled:
            rule = "started before the retry was scheduled"
        elif event.attempt != job.attempt + 1:
            rule = f"started attempt {event.attempt}, expected {job.attempt + 1}"
        job.status, job.attempt, job.scheduled = "running", job.attempt + 1, False
        return rule
    if tag == "completed":
        if final:
            return f"completed after {status}"
        job.status, job.error, job.scheduled = "completed", False, False
        return None if status == "running" else f"completed while {status}"
    if tag == "requested":
        return "requested twice"
    if tag == "retried" and event.manual:
        if status != "failed":
            return f"manual retry while {status}"
        rule = None
        if job.retry_count >= job.max_retries:
            rule = f"manual retry after {job.retry_count} of {job.max_retries} attempts"
        job.status, job.attempt, job.retry_count = "pending", 0, 0
        job.error, job.scheduled = False, True
        return rule
    if final:
        return f"{tag} after {status}"
    if tag == "failed":
        rule = None
        if status != "running":
            rule = f"failed while {status}"
        elif event.will_retry and job.retry_count + 1 >= job.max_retries:
            rule = f"will_retry after the last of {job.max_retries} attempts"
        job.status = "pending" if event.will_retry else "failed"
        job.retry_count += 1
        job.error, job.scheduled = True, False
        return rule
    if tag == "retried":
        awaiting = status == "pending" and job.error and not job.scheduled
        if status == "pending":
            job.scheduled = True
        return None if awaiting else "retried without a failed attempt to retry"
    if tag == "cancelled":
        job.status, job.scheduled = "cancelled", False
        return None
    if tag == "lease_renewed":
        if status != "running":
            return f"lease_renewed while {status}"
        return None if event.attempt == job.attempt else f"lease_renewed of attempt {event.attempt}"
    return f"{tag} in a job stream"
