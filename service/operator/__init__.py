"""Operator commands (`jobtrail audit | replay | export | import | import-legacy | prune`).

Each module here is one command with two functions, so the `jobtrail` entry point stays
a list and every command can be tested with `service.cli.main([...])`:

    def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None
    def run(args: argparse.Namespace) -> int      # exit 0, 1 (a check failed) or 2 (usage)

They read the data directory directly (never through the HTTP API), work beside live
`serve` and `worker` processes, and never change an acknowledged event.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Sequence
from typing import Final, Protocol

COMMANDS: Final[dict[str, str]] = {
    # command name -> module; adding one is one line here
    "audit": "service.operator.audit",
    "export": "service.operator.export",
    "import": "service.operator.import_events",
    "import-legacy": "service.operator.import_legacy",
    "prune": "service.operator.prune",
    "replay": "service.operator.replay",
    "verify": "service.operator.verify",
}


class Command(Protocol):
    def add_parser(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


DATA_HELP: Final = "data directory (JOBTRAIL_DATA, ./jobtrail-data)"


STORE_HELP: Final = (
    "a postgresql:// URL of a shared store (JOBTRAIL_STORE); this version has only the file "
    "store, so it answers with exit 2: use --data"
)


class StoreUnavailable(Exception):
    """A store was chosen (`--store`, `JOBTRAIL_STORE`) that this version cannot open."""


def store_flag(parser: argparse.ArgumentParser) -> None:
    """`--store URL`, as API.md section 5 names it beside `--data`."""
    parser.add_argument("--store", metavar="URL", help=STORE_HELP)


def chosen_store(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """Refuse a store other than a data directory, rather than quietly use `--data`'s.

    `--store` or `JOBTRAIL_STORE` (which an explicit `--data` overrides: flags win) name
    PostgreSQL, which comes with its own issue; a user who set it must not find their
    jobs in ./jobtrail-data instead.
    """
    url = getattr(args, "store", None)
    data_given = any(a == "--data" or a.startswith("--data=") for a in argv)
    if url is None and not data_given:
        url = os.environ.get("JOBTRAIL_STORE") or None
    if url is not None:
        shown = url.split("@")[-1]  # never echo a password
        raise StoreUnavailable(
            f"the store {shown!r} (--store or JOBTRAIL_STORE) cannot be opened: this version "
            "has only the file store; use --data DIR and unset JOBTRAIL_STORE"
        )


def command_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    summary: str,
    description: str,
    epilog: str,
    data_help: str = DATA_HELP,
) -> argparse.ArgumentParser:
    """A command's parser with what every operator command has: its texts and `--data`."""
    parser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data", default=os.environ.get("JOBTRAIL_DATA", "./jobtrail-data"), help=data_help
    )
    store_flag(parser)
    return parser


def load(name: str) -> Command:
    module: Command = importlib.import_module(COMMANDS[name])
    return module


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add every operator command's parser; the runner of each, by command name."""
    runners: dict[str, Callable[[argparse.Namespace], int]] = {}
    for name in COMMANDS:
        command = load(name)
        command.add_parser(sub)
        runners[name] = command.run
    return runners
