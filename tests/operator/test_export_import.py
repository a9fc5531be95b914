"""`jobtrail export` and `jobtrail import` on a store built by the real service and worker.

A whole export imported into an empty directory folds to equal projections and exports
to the same bytes; an export beside an appender in another process is a consistent
prefix of the store; a malformed export stops the import at the line that is wrong.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from eventstore.filelog import FileLog
from eventstore.filestore import open_file_store
from eventstore.records import uuid7
from projections.model import ReadModel
from projections.runner import fold_as_of
from tests.operator.test_audit import Built, appending, build_store, run_cli


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_store(tmp_path_factory.mktemp("export") / "data")


@pytest.fixture(scope="module")
def exported(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built store's whole export, as a file."""
    path = tmp_path_factory.mktemp("export-file") / "all.ndjson"
    assert _main("export", "--data", str(built.data), "--output", str(path)) == 0
    return path


def _main(*argv: str) -> int:
    from service.cli import main

    return main(list(argv))


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


async def _fold(data: Path) -> tuple[ReadModel, int]:
    model = ReadModel()
    async with open_file_store(data, create=False, readonly=True, watch=False) as store:
        head = await store.head()
        assert await fold_as_of(store, model.projections, head) == head
    return model, head


def fold(data: Path) -> tuple[ReadModel, int]:
    """Every projection folded from the store's feed to its head, and the head."""
    return anyio.run(_fold, data)


def export_of(data: Path, tmp_path: Path, *flags: str) -> Path:
    path = tmp_path / f"export-{uuid7()}.ndjson"
    assert _main("export", "--data", str(data), "--output", str(path), *flags) == 0
    return path


# -- the round trip ----------------------------------------------------------------------


def test_import_of_an_export_rebuilds_the_same_projections_and_the_same_export(
    built: Built, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "imported"
    code, out, err = run_cli(capsys, "import", str(exported), "--data", str(target))
    assert code == 0, err
    source, source_head = fold(built.data)
    copy, copy_head = fold(target)
    assert copy_head == source_head == len(lines_of(exported))
    for mine, theirs in zip(source.projections, copy.projections, strict=True):
        assert mine == theirs, f"projection {mine.name} differs"
        assert mine.dump() == theirs.dump(), mine.name
    assert source == copy
    assert f"{source_head} events of " in out and f"(positions 1-{source_head})" in out
    again = export_of(target, tmp_path)
    assert again.read_bytes() == exported.read_bytes(), "export → import → export is the same"


def test_an_import_keeps_ids_versions_times_and_appends(
    built: Built, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "imported"
    assert run_cli(capsys, "import", str(exported), "--data", str(target))[0] == 0
    source, copy = FileLog(built.data, readonly=True), FileLog(target, readonly=True)
    try:
        before, after = source.read_all(1, 10_000), copy.read_all(1, 10_000)
        assert before == after, "every envelope: position, stream, version, id, time, event"
        # No append is split: the events of each record (one append) of the source are
        # in one record of the copy (which joins the appends of one commit).
        record_of = {e.position: n for n, page in enumerate(copy.iter_all()) for e in page}
        for page in source.iter_all():
            assert len({record_of[e.position] for e in page}) == 1
    finally:
        source.close()
        copy.close()


def test_export_lines_are_the_api_events_with_their_stream(built: Built, exported: Path) -> None:
    lines = lines_of(exported)
    assert [line["position"] for line in lines] == list(range(1, len(lines) + 1))
    keys = ["id", "job_id", "version", "position", "type", "recorded_at", "data", "stream"]
    assert all(list(line) == keys for line in lines)
    categories = Counter(line["stream"].split(":")[0] for line in lines)
    assert set(categories) == {"job", "usage", "lead", "site", "idem"}, categories
    for line in lines:
        is_job = line["stream"].startswith("job:")
        assert line["job_id"] == (line["stream"][4:] if is_job else None)
    flaky = [line for line in lines if line["job_id"] == built.flaky]
    assert len(flaky) == len(built.flaky_events)
    for line, api in zip(flaky, built.flaky_events, strict=True):
        assert {k: line[k] for k in api if k not in ("recorded_at", "data")} == {
            k: api[k] for k in api if k not in ("recorded_at", "data")
        }
        assert _ms(line["recorded_at"]) == _ms(api["recorded_at"]), "the API shows ms"
        assert line["data"].keys() == api["data"].keys()


def _ms(value: str) -> datetime:
    at = datetime.fromisoformat(value)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def test_export_to_standard_output(
    built: Built, exported: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    code = _main("export", "--data", str(built.data))
    out, err = capsysbinary.readouterr()
    assert code == 0
    assert out == exported.read_bytes()
    count = len(out.splitlines())
    assert (
        err
        == f"jobtrail export: {count} events written (feed read up to position {count})\n".encode()
    )


def test_import_from_standard_input(
    exported: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(exported.read_bytes())))
    code, _, err = run_cli(capsys, "import", "-", "--data", str(tmp_path / "d"))
    assert code == 0, err
    assert export_of(tmp_path / "d", tmp_path).read_bytes() == exported.read_bytes()


# -- filters -------------------------------------------------------------------------------


def test_site_exports_the_streams_of_that_site_only(
    built: Built, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site2 = lines_of(export_of(built.data, tmp_path, "--site", "site2"))
    assert {line["job_id"] for line in site2} == {built.other_site}
    site1_path = export_of(built.data, tmp_path, "--site", "site1")
    site1 = lines_of(site1_path)
    everything = lines_of(exported)
    assert len(site1) + len(site2) == len(everything), "every stream is of one site"
    assert built.other_site not in {line["job_id"] for line in site1}
    assert {line["stream"].split(":")[0] for line in site1} == {
        "job",
        "usage",
        "lead",
        "site",
        "idem",
    }
    # Whole streams: a site's export imports on its own, positions numbered afresh.
    target = tmp_path / "site1"
    code, _, err = run_cli(capsys, "import", str(site1_path), "--data", str(target))
    assert code == 0, err
    source, _ = fold(built.data)
    copy, head = fold(target)
    assert head == len(site1)
    for view in source.jobs:
        mine = copy.jobs.get(view.job_id)
        if view.site_id == "site2":
            assert mine is None
            continue
        assert mine is not None
        same = msgspec.structs.replace(
            mine, position=view.position, created_position=view.created_position
        )
        assert same == view, "equal but for the positions"
    assert copy.leads == source.leads


def test_since_and_until_split_the_export_at_a_time(
    built: Built, exported: Path, tmp_path: Path
) -> None:
    everything = lines_of(exported)
    middle = everything[len(everything) // 2]["recorded_at"]
    since = lines_of(export_of(built.data, tmp_path, "--since", middle))
    until = lines_of(export_of(built.data, tmp_path, "--until", middle))
    assert since and until
    assert all(
        datetime.fromisoformat(e["recorded_at"]) >= datetime.fromisoformat(middle) for e in since
    )
    assert all(
        datetime.fromisoformat(e["recorded_at"]) < datetime.fromisoformat(middle) for e in until
    )
    assert sorted(e["position"] for e in since + until) == [e["position"] for e in everything]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    assert lines_of(export_of(built.data, tmp_path, "--since", tomorrow)) == []
    assert len(lines_of(export_of(built.data, tmp_path, "--until", tomorrow))) == len(everything)
    both = lines_of(
        export_of(built.data, tmp_path, "--since", middle, "--until", tomorrow, "--site", "site1")
    )
    assert {e["position"] for e in both} <= {e["position"] for e in since}


def test_job_exports_one_job(
    built: Built, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = lines_of(export_of(built.data, tmp_path, "--job", built.flaky))
    assert mine == [line for line in lines_of(exported) if line["job_id"] == built.flaky]
    upper = lines_of(
        export_of(built.data, tmp_path, "--job", built.flaky.upper(), "--site", "site1")
    )
    assert upper == mine
    capsys.readouterr()
    code, out, err = run_cli(
        capsys, "export", "--data", str(built.data), "--job", built.other_site, "--site", "site1"
    )
    assert (code, out) == (1, "")
    assert err == f"jobtrail export: no such job {built.other_site} in site site1\n"
    missing = str(uuid7())
    code, _, err = run_cli(capsys, "export", "--data", str(built.data), "--job", missing)
    assert code == 1 and "no such job" in err


# -- beside a live appender ----------------------------------------------------------------


def test_export_beside_an_appender_is_a_consistent_prefix(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(built.data, data)
    start = len(lines_of(export_of(data, tmp_path)))
    sizes = []
    live = str(uuid7())
    with appending(data, live):
        for _ in range(4):
            path = export_of(data, tmp_path)
            lines = lines_of(path)
            assert [e["position"] for e in lines] == list(range(1, len(lines) + 1))
            _assert_whole_appends(lines[start:], live)
            sizes.append(len(lines))
    assert sizes == sorted(sizes) and sizes[-1] > start, "the exports saw the appends"
    # The last live export imports into an empty directory and exports the same again.
    target = tmp_path / "copy"
    code, _, err = run_cli(capsys, "import", str(path), "--data", str(target))
    assert code == 0, err
    assert export_of(target, tmp_path).read_bytes() == path.read_bytes()


def _assert_whole_appends(appended: list[dict[str, Any]], live: str) -> None:
    """The appender's two-stream appends: a job's `requested` and its quota, both or neither."""
    requested = {
        e["job_id"]: e["position"]
        for e in appended
        if e["type"] == "requested" and e["job_id"] != live
    }
    reserved = {
        e["data"]["job_id"]: e["position"] for e in appended if e["type"] == "quota_reserved"
    }
    assert requested.keys() == reserved.keys()
    assert all(reserved[job] == position + 1 for job, position in requested.items())


# -- a malformed export ----------------------------------------------------------------------


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def _edit(line: bytes, change: Any) -> bytes:
    event = json.loads(line)
    change(event)
    return json.dumps(event).encode() + b"\n"


def _flaky_line(lines: list[bytes], built: Built, version: int) -> int:
    """The index of the flaky job's event of that version."""
    for i, line in enumerate(lines):
        event = json.loads(line)
        if event["job_id"] == built.flaky and event["version"] == version:
            return i
    raise AssertionError("no such line")


def _set(key: str, value: Any) -> Any:
    def change(event: dict[str, Any]) -> None:
        event[key] = value

    return change


def _set_data(key: str, value: Any) -> Any:
    def change(event: dict[str, Any]) -> None:
        event["data"][key] = value

    return change


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("gap", "an event before it is missing"),
        ("repeat", "does not follow"),
        ("repeat-later", "repeated"),
        ("unknown-type", "unknown event type 'exploded'"),
        ("bad-data", "is not a 'started' event"),
        ("unknown-field", "unknown fields ['colour']"),
        ("not-json", "not an exported event"),
        ("missing-field", "not an exported event"),
        ("wrong-job-id", "does not match stream"),
        ("bad-stream", "`stream`"),
        ("naive-time", "not an exported event"),
    ],
)
def test_a_malformed_line_stops_the_import_there(
    built: Built,
    exported: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    how: str,
    says: str,
) -> None:
    lines = exported.read_bytes().splitlines(keepends=True)
    i = _flaky_line(lines, built, 5)  # the second `started`
    if how == "gap":
        del lines[i]
    elif how == "repeat":
        lines.insert(i + 1, lines[i])
        i += 1
    elif how == "repeat-later":
        lines.append(_edit(lines[i], _set("position", len(lines) + 1)))
        i = len(lines) - 1
    elif how == "unknown-type":
        lines[i] = _edit(lines[i], _set("type", "exploded"))
    elif how == "bad-data":
        lines[i] = _edit(lines[i], _set_data("attempt", "two"))
    elif how == "unknown-field":
        lines[i] = _edit(lines[i], _set_data("colour", "red"))
    elif how == "not-json":
        lines[i] = lines[i][:40] + b"\n"
    elif how == "missing-field":
        lines[i] = _edit(lines[i], lambda e: e.pop("stream"))
    elif how == "wrong-job-id":
        lines[i] = _edit(lines[i], _set("job_id", built.completed))
    elif how == "bad-stream":
        lines[i] = _edit(lines[i], _set("stream", "job:../../etc"))
    elif how == "naive-time":
        lines[i] = _edit(lines[i], _set("recorded_at", "2026-11-23T10:00:00"))
    source = _write(tmp_path / "bad.ndjson", lines)
    target = tmp_path / "target"
    code, out, err = run_cli(capsys, "import", str(source), "--data", str(target))
    assert code == 1 and out == ""
    line = i + 1
    assert f"{source} line {line}: " in err and says in err, err
    assert f"nothing from line {line} on" in err
    # What was imported is the file's lines before it (up to a commit), whole and valid.
    log = FileLog(target, readonly=True)
    try:
        head = log.head()
        assert head < line
        imported = export_of(target, tmp_path).read_bytes().splitlines(keepends=True)
        assert imported == lines[:head]
    finally:
        log.close()


# -- the target directory and usage ----------------------------------------------------------


def test_import_refuses_a_store_with_events(
    built: Built, exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(built.data, data)
    before = (data / "feed" / "feed.log").read_bytes()
    code, out, err = run_cli(capsys, "import", str(exported), "--data", str(data))
    assert (code, out) == (1, "")
    assert "holds events already" in err
    assert (data / "feed" / "feed.log").read_bytes() == before


def test_import_into_an_empty_data_directory(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert run_cli(capsys, "init", "--data", str(data))[0] == 0
    code, _, err = run_cli(capsys, "import", str(exported), "--data", str(data))
    assert code == 0, err


def test_import_usage_errors_are_2(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys, "import", str(tmp_path / "nope.ndjson"), "--data", str(tmp_path / "d")
    )
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "d").exists(), "nothing created"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, "import", str(exported), "--data", str(foreign))
    assert code == 2 and "not a jobtrail data directory" in err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    code, _, err = run_cli(capsys, "import", str(exported), "--data", str(exported))
    assert code == 2 and "is not a directory" in err
    code, _, err = run_cli(capsys, "import", "--data", str(tmp_path / "d"))
    assert code == 2 and "FILE" in err


def test_an_empty_export_imports_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write(tmp_path / "empty.ndjson", [b"\n"])
    code, out, _ = run_cli(capsys, "import", str(source), "--data", str(tmp_path / "d"))
    assert code == 0 and "0 events of 0 streams" in out


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--since", "yesterday"], "--since 'yesterday' is neither"),
        (["--until", "2026-13-01"], "--until"),
        (["--since", "2026-11-02", "--until", "2026-11-01"], "--since must be before --until"),
        (["--site", "a:b"], "site id must be"),
        (["--job", "123"], "job id must be a UUID"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_export_usage_errors_are_2(
    built: Built, capsys: pytest.CaptureFixture[str], flags: list[str], says: str
) -> None:
    code, out, err = run_cli(capsys, "export", "--data", str(built.data), *flags)
    assert code == 2 and out == ""
    assert says in err


def test_export_of_a_missing_or_foreign_data_directory_is_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "export", "--data", str(tmp_path / "nope"))
    assert (code, out) == (2, "") and "does not exist" in err
    assert not (tmp_path / "nope").exists()
    (tmp_path / "foreign").mkdir()
    code, _, err = run_cli(capsys, "export", "--data", str(tmp_path / "foreign"))
    assert code == 2 and "is not a jobtrail data directory" in err


def test_export_output_that_cannot_be_written_is_1(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys, "export", "--data", str(built.data), "--output", str(tmp_path / "no" / "x")
    )
    assert code == 1 and "cannot write the output" in err


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ("export", ["--data", "--output", "--site", "--since", "--until", "--job", "exit status"]),
        ("import", ["FILE", "--data", "exit status"]),
    ],
)
def test_help_describes_every_flag(
    capsys: pytest.CaptureFixture[str], command: str, flags: list[str]
) -> None:
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    for flag in flags:
        assert flag in out
