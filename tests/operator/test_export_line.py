"""An export line is the API's event JSON plus its stream, with times at full precision."""

from __future__ import annotations

from contextlib import closing
from datetime import datetime
from pathlib import Path

from service.events_api import event_json
from service.operator.export import export_json
from service.operator.feedscan import open_feed
from tests.operator.test_feedscan import fill_mixed


def _ms(value: datetime) -> str:
    """A time as the API writes it, up to its milliseconds."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:23]


def test_an_export_line_has_the_api_event_keys_and_values(tmp_path: Path) -> None:
    fill_mixed(tmp_path, 6)
    with closing(open_feed(tmp_path)) as log:
        recorded = [e for page in log.iter_all(1) for e in page]
    assert len({type(r.event) for r in recorded}) >= 8
    for r in recorded:
        api, line = event_json(r), export_json(r)
        assert list(line) == [*api, "stream"] and line["stream"] == r.stream
        assert list(line["data"]) == list(api["data"])
        assert line["recorded_at"] == r.recorded_at
        for key in ("id", "job_id", "version", "position", "type"):
            assert line[key] == api[key]
        for name, value in line["data"].items():
            if isinstance(value, datetime):
                assert value == getattr(r.event, name) and api["data"][name][:23] == _ms(value)
            else:
                assert api["data"][name] == value
        assert api["recorded_at"][:23] == _ms(r.recorded_at)
