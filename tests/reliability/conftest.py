"""Reliability suite: the `soak` marker, the summary table, and shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Gateway
from tests.reliability.harness import CopySink
from tests.reliability.report import REPORT, Report

SOAK_ENV = "DICOM_GW_SOAK"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"soak: long reliability cases (10,000+ fuzz cases, long loads); run with -m soak or "
        f"{SOAK_ENV}=1",
    )


def soak_enabled(config: pytest.Config) -> bool:
    return "soak" in (config.getoption("markexpr", "") or "") or os.environ.get(SOAK_ENV) == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if soak_enabled(config):
        return
    skip = pytest.mark.skip(reason=f"soak case: run with -m soak or {SOAK_ENV}=1")
    for item in items:
        if "soak" in item.keywords and "tests/reliability" in str(item.fspath):
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if "tests/reliability" not in str(item.fspath):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            result = "xfailed (known bug)" if report.skipped else "XPASS"
            reason = str(report.wasxfail)
        elif report.skipped:
            result = "skipped"
            reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
        elif report.failed:
            result = "failed"
            reason = report.longreprtext.strip().splitlines()[-1] if report.longreprtext else ""
        else:
            result, reason = "passed", ""
        REPORT.settle(item.nodeid, result, reason)


def pytest_terminal_summary(terminalreporter: object) -> None:
    if not REPORT.rows:
        return
    path = REPORT.write()
    write = terminalreporter.write_line  # type: ignore[attr-defined]
    terminalreporter.section("reliability summary")  # type: ignore[attr-defined]
    for line in REPORT.table().splitlines():
        write(line)
    write(f"(written to {path})")


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[..., object]:
    """Add a row to the summary table for this test."""
    from tests.reliability.report import Row

    def add(name: str, **values: object) -> Row:
        return REPORT.add(Row(name, test=request.node.nodeid, **values))  # type: ignore[arg-type]

    return add


@pytest.fixture
def copy_sinks(tmp_path: Path) -> Iterator[Callable[..., CopySink]]:
    started: list[CopySink] = []

    def make(ae_title: str, port: int | None = None, **kwargs: object) -> CopySink:
        from tests.conftest import free_port

        sink = CopySink(ae_title, port or free_port(), tmp_path / f"sink-{ae_title}", **kwargs)  # type: ignore[arg-type]
        started.append(sink)
        return sink.start()

    yield make
    for sink in started:
        sink.stop()


__all__ = ["Gateway", "Report", "soak_enabled"]
