"""`--store URL` and `JOBTRAIL_STORE`: a store this version cannot open is refused, never
silently replaced by the default data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore.filelog import FileLog
from service.cli import main

URL = "postgresql://jobtrail:hunter2@db.internal/jobs"


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--store", URL],
        ["worker", "--store", URL, "--burst"],
        ["token", "--store", URL, "--site", "s1", "--user", "u1"],
        ["verify", "--store", URL],
        ["export", "--store", URL],
        ["audit", "--store", URL, "0190a4a0-0000-7000-8000-000000000000"],
    ],
)
def test_store_flag_is_refused_with_exit_2_and_no_password_echoed(
    argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "db.internal/jobs" in err and "--data" in err
    assert "hunter2" not in err
    assert not (tmp_path / "jobtrail-data").exists()  # nothing was created in its place


def test_jobtrail_store_is_refused_unless_data_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBTRAIL_STORE", URL)
    assert main(["verify"]) == 2
    assert "JOBTRAIL_STORE" in capsys.readouterr().err
    assert not (tmp_path / "jobtrail-data").exists()
    data = tmp_path / "data"
    FileLog(data).close()
    assert main(["verify", "--data", str(data)]) == 0  # flags win over the environment
    assert main(["verify", f"--data={data}"]) == 0
