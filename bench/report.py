"""What a benchmark hands back: figures checked against targets, the baseline, a table, JSON.

A figure is a ratio or a bound measured in the same run as its baseline, so a noisy
machine moves both sides together; `meets` is decided here, once, from the target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import msgspec


class Figure(msgspec.Struct, frozen=True):
    """One row of a benchmark's table and of its JSON file."""

    name: str
    value: float
    unit: str
    target: str
    meets: bool


def figure(name: str, value: float, unit: str, target: str) -> Figure:
    """A figure checked against a target like ">= 0.5" or "<= 20" (NaN never meets)."""
    op, _, bound_text = target.partition(" ")
    bound = float(bound_text)
    if op == ">=":
        ok = value >= bound
    elif op == "<=":
        ok = value <= bound
    else:
        raise ValueError(f"a target is '>= N' or '<= N', not {target!r}")
    return Figure(name, value, unit, target, ok and not math.isnan(value))


class Result(msgspec.Struct, frozen=True):
    """A benchmark's figures and every baseline measurement they were compared with."""

    figures: list[Figure]
    baseline: dict[str, Any]
    meta: dict[str, Any] = {}

    @property
    def meets(self) -> bool:
        return all(f.meets for f in self.figures)


_JSON: Final = msgspec.json.Encoder()


def write_json(result: Result, path: Path) -> None:
    """Write the result as `{"figures": [...], "baseline": {...}, "meta": {...}}`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.format(_JSON.encode(result), indent=2) + b"\n")
    tmp.replace(path)


def format_value(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """A plain-text table with a rule under the header; the first column left-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def print_result(name: str, result: Result, out: TextIO) -> None:
    """The figures table, then the baseline medians it was compared with."""
    rows = [
        [f.name, format_value(f.value), f.unit, f.target, "ok" if f.meets else "MISSED"]
        for f in result.figures
    ]
    print(f"\n== {name} ==", file=out)
    print(table(rows, ["figure", "value", "unit", "target", "meets"]), file=out)
    flat = _flatten(result.baseline)
    if flat:
        print("\nbaseline and raw measurements (medians of alternating runs):", file=out)
        width = max(len(k) for k in flat)
        for key, value in flat.items():
            print(f"  {key.ljust(width)}  {value}", file=out)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Scalar entries of nested dicts as `a.b: value`; lists of runs are left to the JSON."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, bool | str):
            out[prefix + key] = str(value)
        elif isinstance(value, int | float):
            out[prefix + key] = format_value(float(value))
    return out
