"""The reliability summary: one row per fault or bad-input class, printed at the end of the
session and written to ``tests/reliability/results/latest.md``."""

from __future__ import annotations

import datetime as dt
import platform
import threading
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "latest.md"


@dataclass
class Row:
    name: str  # the fault or bad-input class
    cases: int = 0  # cases tried (kills, outage seconds, fuzz cases...)
    outcome: str = ""  # what the gateway did
    lost: int | None = None
    duplicated: int | None = None
    test: str = ""  # the pytest node id that produced it
    result: str = "running"  # passed / failed / xfailed / skipped: set by the conftest hooks


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, row: Row) -> Row:
        with self._lock:
            self.rows.append(row)
        return row

    def settle(self, test: str, result: str, reason: str = "") -> None:
        """Record a test's result on its rows, or add a row for a test that made none."""
        with self._lock:
            mine = [row for row in self.rows if row.test == test]
            if not mine:
                name = test.split("::")[-1]
                self.rows.append(Row(name, outcome=reason[:120], test=test, result=result))
            for row in mine:
                row.result = result
                if reason and result != "passed":
                    row.outcome = (row.outcome + "; " if row.outcome else "") + reason[:120]

    def table(self) -> str:
        def cell(value: object) -> str:
            return "-" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

        lines = [
            "| class | cases tried | outcome | lost | duplicated | result |",
            "|---|---:|---|---:|---:|---|",
        ]
        for row in self.rows:
            lines.append(
                f"| {cell(row.name)} | {cell(row.cases)} | {cell(row.outcome)} | "
                f"{cell(row.lost)} | {cell(row.duplicated)} | {cell(row.result)} |"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            "# Reliability results\n\n"
            f"Written by `tests/reliability` on {when} ({platform.node()}, "
            f"Python {platform.python_version()}). `lost` must be 0 in every passing row (an "
            "`xfailed` row is an open bug, named in its outcome); `duplicated` counts extra "
            "copies allowed by at-least-once delivery (see `docs/reliability.md`).\n\n"
            + self.table()
            + "\n"
        )

    def write(self, path: Path = RESULTS) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.markdown())
        return path


REPORT = Report()
