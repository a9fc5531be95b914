"""The data directory's format: a format-1 directory is upgraded by a writer that opens it,
and a directory of a newer format than this jobtrail's is refused with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventstore import NO_STREAM, AppendTo, new
from eventstore.filelog import FileLog
from eventstore.layout import FORMAT, MARKER, Layout, NewerFormat, NotADataDirectory
from eventstore.verify import verify
from service.cli import main
from tests.eventstore.helpers import job_stream, requested


def _set_format(data: Path, fmt: int) -> None:
    info = json.loads((data / MARKER).read_text())
    info["format"] = fmt
    (data / MARKER).write_text(json.dumps(info))


def test_a_new_directory_has_the_current_format(tmp_path: Path) -> None:
    FileLog(tmp_path / "data").close()
    assert FORMAT == 2
    assert json.loads((tmp_path / "data" / MARKER).read_text())["format"] == FORMAT


def test_a_format_1_directory_is_upgraded_by_a_writer(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = FileLog(data)
    s = job_stream()
    log.append_many([AppendTo(s, [new(requested())], NO_STREAM)])
    log.close()
    _set_format(data, 1)
    reader = FileLog(data, create=False, readonly=True)  # a reader changes nothing
    assert [e.stream for e in reader.read_all()] == [s]
    reader.close()
    assert Layout(data).format() == 1
    log = FileLog(data, create=False)
    log.close()
    info = json.loads((data / MARKER).read_text())
    assert info["format"] == FORMAT and "upgraded_at" in info and "created_at" in info
    assert verify(data).ok


def test_a_newer_format_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    FileLog(data).close()
    _set_format(data, FORMAT + 1)
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    for open_it in (
        lambda: FileLog(data),
        lambda: FileLog(data, create=False),
        lambda: FileLog(data, readonly=True, create=False),
        lambda: verify(data),
    ):
        with pytest.raises(NewerFormat, match=f"format {FORMAT + 1}.*newer jobtrail"):
            open_it()
    assert isinstance(NewerFormat("x"), NotADataDirectory)  # the CLI's exit 2
    assert main(["verify", "--data", str(data)]) == 2
    assert "newer jobtrail" in capsys.readouterr().err
    after = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    assert after == before  # not a byte changed
