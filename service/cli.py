"""The `jobtrail` command: flags and JOBTRAIL_* variables in, library calls out.

Exit codes: 0 success, 1 a check failed or the work could not be done, 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import msgspec

from eventstore import streams
from eventstore.errors import JobtrailError
from eventstore.events import JobCompleted, JobProgressed, JobRequested, JobStarted
from eventstore.filestore import open_file_store
from eventstore.layout import Layout, NotADataDirectory
from eventstore.records import uuid7
from eventstore.verify import verify


class DemoSettings(msgspec.Struct, frozen=True):
    data: Path
    jobs: int


class VerifySettings(msgspec.Struct, frozen=True):
    data: Path
    json: bool


def _parser() -> argparse.ArgumentParser:
    default_data = os.environ.get("JOBTRAIL_DATA", "./jobtrail-data")
    parser = argparse.ArgumentParser(
        prog="jobtrail", description="An event-sourced job service with append-only job logs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="append the events of a few jobs, then replay the feed and verify the store",
        description="Runs jobs' whole histories through the durable store on DATA "
        "(created if missing), reads them back from the global feed and verifies every log.",
    )
    demo.add_argument("--data", default=default_data, help="data directory (JOBTRAIL_DATA)")
    demo.add_argument("--jobs", type=int, default=3, help="how many jobs to run (default 3)")

    ver = sub.add_parser(
        "verify",
        help="check every log of a data directory",
        description="Walks the feed and every stream log. Exit 1 when acknowledged data is "
        "damaged or the logs disagree; a torn tail set aside after a crash is reported only.",
    )
    ver.add_argument("--data", default=default_data, help="data directory (JOBTRAIL_DATA)")
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.command == "demo":
            if args.jobs < 1:
                parser.error("--jobs must be at least 1")
            return anyio.run(_demo, DemoSettings(Path(args.data), args.jobs))
        return _verify(VerifySettings(Path(args.data), args.json))
    except NotADataDirectory as exc:
        print(f"jobtrail: {exc}", file=sys.stderr)
        return 2
    except JobtrailError as exc:
        print(f"jobtrail: {exc}", file=sys.stderr)
        return 1


async def _demo(settings: DemoSettings) -> int:
    async with open_file_store(settings.data) as store:
        start = await store.head() + 1
        for n in range(settings.jobs):
            job = streams.job(str(uuid7()))
            t0 = time.perf_counter()
            await store.append(
                job, [JobRequested(job_type="demo", site_id="demo", user_id="cli")], 0
            )
            await store.append(job, [JobStarted(attempt=1, worker_id="demo")], 1)
            await store.append(job, [JobProgressed(progress=50, message="halfway")], 2)
            await store.append(job, [JobCompleted(result={"n": n})], 3)
            ms = (time.perf_counter() - t0) * 1000
            print(f"{job}: 4 durable appends in {ms:.1f} ms")
        print(f"\nreplaying the feed from position {start}:")
        for e in await store.read_all(start, 10_000):
            print(f"  {e.position:>6}  {e.stream}  v{e.version}  {e.type}")
    report = verify(settings.data)
    print(
        f"\nverify: {report.events} events in {report.streams} streams, "
        f"{'ok' if report.ok else 'PROBLEMS'}; data in {settings.data}"
    )
    return 0 if report.ok else 1


def _verify(settings: VerifySettings) -> int:
    Layout(settings.data).require()
    report = verify(settings.data)
    if settings.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        for f in report.findings:
            print(f"{f.severity:5}  {f.kind:12}  {f.where}  {f.detail}")
        print(
            f"{report.events} events, {report.streams} streams, {report.bytes} bytes: "
            f"{'ok' if report.ok else 'FAILED'}"
        )
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
