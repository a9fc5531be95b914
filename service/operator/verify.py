"""`jobtrail verify`: the store-wide check of API.md section 5, and the job rules over it.

Two checks, both read-only and lock-free, so it runs beside live processes: the store
check (`eventstore.verify`: damage, gaps, torn tails, feed/stream disagreement) and the
rule check (`projections.history_check` over the feed: illegal transitions, gaps in job
streams), in one walk of the feed. A torn tail set aside after a crash is reported as
`info` and is not a failure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack, closing, nullcontext
from pathlib import Path
from typing import Self

import msgspec

from eventstore import streams
from eventstore.errors import InvalidId, StorageError
from eventstore.filelog import FileLog
from eventstore.layout import Layout, NotADataDirectory
from eventstore.shared_logs import SharedRead
from eventstore.verify import FeedHook, Finding, Report, verify
from eventstore.verify_logs import LogsSeen
from projections.history_check import HistoryCheck
from projections.rule_events import RULE_RECORDS, RuleEnvelope
from service.operator import command_parser
from service.operator.feedscan import (
    Bar,
    Partner,
    head_hint,
    open_feed,
    scan_feed,
    store_check,
    worth_parallel,
)

DESCRIPTION = """\
Walks the feed and every stream log (damage, gaps, torn tails, the feed and the stream
logs disagreeing), then every job's stream against the job rules (illegal transitions,
gaps in versions). Read-only and lock-free: safe beside running serve and worker
processes. Prints one line per finding (severity, kind, where, detail), then a summary;
with a terminal on standard error, progress goes there.
"""

EPILOG = """\
exit status:
  0  nothing wrong (findings of severity `info`, such as a torn tail that a crash left
     and recovery sets aside, are reported only)
  1  acknowledged data is damaged, the feed and a stream log disagree, or a history
     breaks the rules (a gap in versions, an illegal transition)
  2  bad usage, or DATA is missing or not a jobtrail data directory
"""


class VerifySettings(msgspec.Struct, frozen=True):
    data: Path
    json: bool = False
    site: str | None = None


class Result(msgspec.Struct):
    """The store check's report with the rule check's findings merged in."""

    streams: int
    events: int
    bytes: int
    findings: list[Finding]
    jobs: int  # job streams checked against the rules
    ok: bool


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = command_parser(
        sub,
        "verify",
        summary="check every log of a data directory, and every job's history against the rules",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object: streams, events, bytes, findings "
        "(severity, kind, where, detail), jobs, ok",
    )
    parser.add_argument(
        "--site",
        help="check the job rules only for this site's jobs (the store check stays store-wide)",
    )


def run(args: argparse.Namespace) -> int:
    settings = VerifySettings(Path(args.data), bool(args.json), args.site)
    if settings.site is not None:
        try:
            streams.valid_id(settings.site, "site id")
        except InvalidId as exc:
            print(f"jobtrail verify: --site: {exc}", file=sys.stderr)
            return 2
    try:
        result = check(settings)
    except NotADataDirectory as exc:
        print(f"jobtrail verify: {exc}", file=sys.stderr)
        return 2
    if settings.json:
        sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    else:
        for f in result.findings:
            print(f"{f.severity:5}  {f.kind:12}  {f.where}  {f.detail}")
        scope = f" of site {settings.site}" if settings.site else ""
        print(f"job rules: {result.jobs} jobs{scope} checked")
        print(
            f"{result.events} events, {result.streams} streams, {result.bytes} bytes: "
            f"{'ok' if result.ok else 'FAILED'}"
        )
    return 0 if result.ok else 1


def check(
    settings: VerifySettings, *, show_progress: bool | None = None, parallel: bool | None = None
) -> Result:
    """Both checks; raises NotADataDirectory, never an error about what it finds.

    One walk of the feed serves both: each record is decoded once (`rule_events`) for the
    store check and the rules. With `parallel` (by default: for a large feed, with two
    CPUs) a second process reads the stream logs meanwhile, and this one helps with those
    left when its walk is done (`eventstore.shared_logs`).
    Where the feed is damaged, or a file cannot be read, both checks run again the plain
    way, which says exactly how far the rules got.
    """
    show = sys.stderr.isatty() if show_progress is None else show_progress
    Layout(settings.data).require()
    rules = HistoryCheck(settings.site)
    notes: list[Finding] = []
    try:
        log = open_feed(settings.data)
    except StorageError as exc:
        notes.append(Finding("error", "bad_file", "feed", f"job rules not checked: {exc}"))
        return _merge(store_check(settings.data), rules, notes)
    with closing(log):
        use_partner = parallel if parallel is not None else worth_parallel(log)
        report: Report | None = None
        shared = _SharedLogs.start(settings.data) if use_partner else None
        with (
            shared if shared is not None else nullcontext(None) as partner,
            Bar("checking the store and the job rules", head_hint(log), show=show) as bar,
        ):
            hook = FeedHook(RULE_RECORDS, _with_progress(rules, bar) if show else rules.check)
            try:
                report = verify(settings.data, hook=hook, logs=partner.result if partner else None)
            except NotADataDirectory:
                raise
            except (OSError, msgspec.DecodeError):
                pass  # a file went or cannot be read, or a record does not decode
        if report is None or not hook.whole:
            report = report if report is not None else store_check(settings.data)
            rules = HistoryCheck(settings.site)
            _check_rules(log, rules, notes, report.events, show)
    return _merge(report, rules, notes)


def _with_progress(rules: HistoryCheck, bar: Bar) -> Callable[[list[RuleEnvelope]], None]:
    """`rules.check`, moving the bar after each chunk of the feed it is handed."""

    def check(events: list[RuleEnvelope]) -> None:
        rules.check(events)
        if events:
            bar.update(events[-1].position)

    return check


class _SharedLogs:
    """The stream logs read by this process and a second one at once (`shared_logs`): the
    second is started at once, this one joins in when its feed walk is done."""

    def __init__(self, data: Path) -> None:
        with ExitStack() as undo:
            self._dir = undo.enter_context(tempfile.TemporaryDirectory(prefix="jobtrail-verify-"))
            self._read = SharedRead(Layout(data), self._dir)
            undo.callback(self._read.close)
            self._helper = Partner(int, str(data), self._dir, module="eventstore.shared_logs")
            self._undo = undo.pop_all()

    @classmethod
    def start(cls, data: Path) -> _SharedLogs | None:
        """Started; or None when the shards cannot be listed, the files not created or the
        process not started (`verify` then reads the logs itself, and reports what it
        cannot read)."""
        try:
            return cls(data)
        except OSError:
            return None

    def result(self) -> LogsSeen:
        return self._read.read(self._helper)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._helper.stop()
        self._undo.close()


def _check_rules(
    log: FileLog, rules: HistoryCheck, notes: list[Finding], total: int | None, show: bool
) -> None:
    with Bar("checking job rules", total or None, show=show) as bar:
        scan = scan_feed(log, rules.check, bar=bar)
    if scan.damage is not None:
        where = f"job rules checked up to position {scan.position}: {scan.damage}"
        notes.append(Finding("info", "unchecked", "feed", where))


def _merge(report: Report, rules: HistoryCheck, notes: list[Finding]) -> Result:
    gaps = {f.where for f in report.findings if f.kind == "gap"}  # the store check said so
    found = [f for f in rules.report() if not (f.kind == "gap" and f.where in gaps)]
    findings = [*report.findings, *found, *notes]
    findings.sort(key=lambda f: f.severity != "error")  # stable: store findings first
    return Result(
        streams=report.streams,
        events=report.events,
        bytes=report.bytes,
        findings=findings,
        jobs=rules.jobs,
        ok=not any(f.severity == "error" for f in findings),
    )
