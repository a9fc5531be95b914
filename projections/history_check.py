"""The job rules checked over whole histories: illegal transitions and version gaps.

`jobtrail verify` feeds it the global feed once, in order; it folds each job stream as
`jobs.apply_job` does and asks `rules.illegal_transition` about every event before
applying it, so its memory is one view per job. Like the fold, it never raises.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from eventstore.events import JobPruned, JobRequested
from eventstore.records import RecordedEvent
from eventstore.verify import Finding
from projections.jobs import JobView, apply_job
from projections.rules import illegal_transition

MAX_FINDINGS: Final = 1000
"""Findings listed in full; the rest are counted in one more finding."""

_OTHER_SITE: Final = -1
"""The state of a job of a site the check was narrowed away from: skipped."""


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
        # Per job id: its view; or, before `requested`, the version reached (an int).
        self._jobs: dict[str, JobView | int] = {}

    @property
    def jobs(self) -> int:
        """How many job streams were checked."""
        return sum(1 for state in self._jobs.values() if state != _OTHER_SITE)

    def check(self, events: Iterable[RecordedEvent]) -> None:
        """Fold a page of the feed in; findings accumulate in `findings`."""
        jobs = self._jobs
        site = self.site
        position = self.position
        for e in events:
            position = e.position
            stream = e.stream
            if not stream.startswith("job:"):
                if isinstance(e.event, JobPruned):
                    self._forget(e.event.job_id)
                continue
            job_id = stream[4:]
            state = jobs.get(job_id)
            if state is None:
                event = e.event
                if site is not None and not (
                    isinstance(event, JobRequested) and event.site_id == site
                ):
                    jobs[job_id] = _OTHER_SITE
                    continue
                view = None
                version = 0
            elif isinstance(state, int):
                if state == _OTHER_SITE:
                    continue
                view = None
                version = state
            else:
                view = state
                version = state.version
            self.events += 1
            if e.version != version + 1:
                self._add("gap", stream, f"version {e.version} follows {version}")
            rule = illegal_transition(view, e)
            if rule is not None:
                self._add("illegal_transition", stream, f"version {e.version}: {rule}")
            after = apply_job(view, e)
            jobs[job_id] = after if after is not None else e.version
        self.position = position

    def _forget(self, job_id: str) -> None:
        """A job retention removed: what is left of it in the feed is no finding.

        A prune that died half way leaves some of the job's events and not others.
        """
        self._jobs.pop(job_id, None)
        stream = f"job:{job_id}"
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
