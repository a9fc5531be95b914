"""The `jobtrail` command: flags and JOBTRAIL_* variables in, library calls out.

Exit codes: 0 success, 1 a check failed or the work could not be done, 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import anyio
import msgspec
from prometheus_client import start_http_server

from eventstore import streams
from eventstore.errors import InvalidId, JobtrailError
from eventstore.events import JobCompleted, JobProgressed, JobRequested, JobStarted
from eventstore.filelog import FileLog
from eventstore.filestore import open_file_store
from eventstore.layout import Layout, NotADataDirectory
from eventstore.records import uuid7
from eventstore.verify import verify
from service import operator
from service.auth import Principal, issue_token, load_or_create_secret
from service.operator import StoreUnavailable, chosen_store, store_flag
from service.operator.prune import prune_periodically
from service.serve import ServedApp
from service.settings import Settings, SettingsError, from_env, parse_duration, with_handlers
from worker.assemble import open_worker
from worker.handlers import HandlersError
from worker.metrics import WorkerMetrics

Runner = Callable[[argparse.Namespace], int]


class DemoSettings(msgspec.Struct, frozen=True):
    data: Path
    jobs: int


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

    init = sub.add_parser(
        "init",
        help="create a data directory (nothing happens if it exists)",
        description="Creates DATA as an empty jobtrail data directory with its signing secret.",
    )
    init.add_argument("--data", default=default_data, help="data directory (JOBTRAIL_DATA)")

    serve = sub.add_parser(
        "serve",
        help="run the HTTP API (uvicorn) on a data directory",
        description="Serves the API of API.md over the file store in DATA, created if "
        "missing. Any number of serve processes may share one data directory.",
    )
    serve.add_argument("--data", default=default_data, help="data directory (JOBTRAIL_DATA)")
    store_flag(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    _handlers_flag(serve)

    up = sub.add_parser(
        "up",
        help="run the HTTP API and a worker in one process",
        description="Serves the API and runs a worker in the same process over the file "
        "store in DATA (created if missing): the embedded default, nothing else to run.",
    )
    up.add_argument("--data", default=default_data, help="data directory (JOBTRAIL_DATA)")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on")
    up.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    up.add_argument("--concurrency", type=int, default=4, help="jobs run at once (default 4)")
    _handlers_flag(up)

    work = sub.add_parser(
        "worker",
        help="run a worker: claim due jobs, run their handlers, record the outcome",
        description="Follows the store in DATA and runs its due jobs. Any number of worker "
        "processes may share one data directory; each job attempt is claimed by one.",
    )
    work.add_argument("--data", default=default_data, help="data directory (JOBTRAIL_DATA)")
    store_flag(work)
    work.add_argument("--concurrency", type=int, default=4, help="jobs run at once (default 4)")
    work.add_argument("--burst", action="store_true", help="run what is due, then exit 0")
    work.add_argument(
        "--metrics-port", type=int, help="serve this worker's Prometheus metrics on this port"
    )
    _handlers_flag(work)

    token = sub.add_parser(
        "token",
        help="print a bearer token",
        description="Prints a signed bearer token on standard output, nothing else. The "
        "secret is JOBTRAIL_SECRET, or the one kept in the data directory.",
    )
    token.add_argument("--data", default=default_data, help="data directory (JOBTRAIL_DATA)")
    store_flag(token)
    token.add_argument("--site", required=True, help="the site the token is for")
    token.add_argument("--user", required=True, help="the user the token names")
    token.add_argument("--role", choices=["member", "admin"], default="member", help="role")
    token.add_argument("--ttl", default="30d", help="lifetime: 3600s, 90m, 12h or 30d")
    return parser


def _operator_commands(parser: argparse.ArgumentParser) -> dict[str, Runner]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return operator.register(sub)


def _handlers_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--handlers",
        action="append",
        metavar="MODULE",
        help="a module name or .py file with `handlers = Handlers()` (repeatable; "
        "replaces JOBTRAIL_HANDLERS)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    operator_commands = _operator_commands(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        chosen_store(args, argv if argv is not None else sys.argv[1:])
        if args.command == "demo":
            if args.jobs < 1:
                print("jobtrail: --jobs must be at least 1", file=sys.stderr)
                return 2
            return anyio.run(_demo, DemoSettings(Path(args.data), args.jobs))
        if args.command == "init":
            FileLog(Path(args.data)).close()
            if not from_env().secret:
                load_or_create_secret(Path(args.data))
            print(f"jobtrail: data directory {args.data} is ready")
            return 0
        if args.command == "serve":
            return _serve(args)
        if args.command == "up":
            return _up(args)
        if args.command == "worker":
            return _worker(args)
        if args.command in operator_commands:
            return operator_commands[args.command](args)
        if args.command == "token":
            return _token(args)
        return 2  # argparse lets no other command through
    except (SettingsError, HandlersError, StoreUnavailable) as exc:
        print(f"jobtrail: {exc}", file=sys.stderr)
        return 2
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


def _prepare(args: argparse.Namespace) -> Settings:
    """Settings from flags and environment, the data directory and secret made ready.

    The flags go into the environment, which every uvicorn worker process reads again.
    """
    os.environ["JOBTRAIL_DATA"] = str(args.data)
    if args.handlers:
        os.environ["JOBTRAIL_HANDLERS"] = ",".join(args.handlers)
    settings = with_handlers(from_env())
    Layout(settings.data).create()
    if not settings.secret:
        load_or_create_secret(settings.data)
    return settings


def _stop_signals_exit_0() -> None:
    """A SIGTERM or SIGINT that stopped the server ends the process with status 0.

    uvicorn shuts down gracefully on either, then raises the signal again with the
    handlers it found installed: with Python's defaults the process would then die by
    SIGTERM (143) or a KeyboardInterrupt, though it stopped cleanly (API.md section 5).
    Before uvicorn takes the signals over (and after it hands them back) one ends the
    process at once, also with status 0.
    """

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.workers < 1 or not 0 < args.port < 65536:
        print("jobtrail: --workers must be at least 1 and --port 1-65535", file=sys.stderr)
        return 2
    _prepare(args)
    _stop_signals_exit_0()
    uvicorn.run(
        "service.serve:serve_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
        timeout_graceful_shutdown=5,  # open SSE streams end; clients resume with Last-Event-ID
    )
    return 0


def _up(args: argparse.Namespace) -> int:
    import uvicorn

    if args.concurrency < 1 or not 0 < args.port < 65536:
        print("jobtrail: --concurrency must be at least 1 and --port 1-65535", file=sys.stderr)
        return 2
    _prepare(args)
    _log_jobs()
    _stop_signals_exit_0()
    uvicorn.run(
        ServedApp(worker_concurrency=args.concurrency),
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=5,
    )
    return 0


def _log_jobs() -> None:
    """One line per job transition on standard error, as uvicorn logs its requests."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


def _worker(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        print("jobtrail: --concurrency must be at least 1", file=sys.stderr)
        return 2
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        print("jobtrail: --metrics-port must be 1-65535", file=sys.stderr)
        return 2
    os.environ["JOBTRAIL_DATA"] = str(args.data)
    if args.handlers:
        os.environ["JOBTRAIL_HANDLERS"] = ",".join(args.handlers)
    settings = with_handlers(from_env())
    Layout(settings.data).require()
    _log_jobs()
    _stop_signals_exit_0()  # until the worker's own receiver takes them over
    return anyio.run(_run_worker, settings, args, backend_options={"use_uvloop": True})


async def _run_worker(settings: Settings, args: argparse.Namespace) -> int:
    metrics = WorkerMetrics()
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    async with (
        open_file_store(settings.data) as store,
        open_worker(store, settings, concurrency=args.concurrency, metrics=metrics) as worker,
    ):
        if args.burst:
            ran = await worker.run_burst()
            print(f"jobtrail: worker ran {ran} attempts and takeovers", file=sys.stderr)
            return 0
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                if settings.retention_seconds is not None:
                    retention = timedelta(seconds=settings.retention_seconds)
                    tg.start_soon(prune_periodically, store, retention)
                async for _ in signals:
                    # Running handlers are cancelled and their jobs handed back
                    # (WorkerLost, due again at once) for another worker to run.
                    tg.cancel_scope.cancel()
                    break
    return 0


def _token(args: argparse.Namespace) -> int:
    ttl = parse_duration(args.ttl)
    settings = from_env(data=Path(args.data))
    if settings.secret:
        secret = settings.secret
    else:
        Layout(settings.data).require()
        secret = load_or_create_secret(settings.data)
    try:
        print(issue_token(secret, Principal(args.site, args.user, args.role), ttl))
    except InvalidId as exc:
        print(f"jobtrail: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
