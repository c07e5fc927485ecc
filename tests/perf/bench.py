"""The receive and forward benchmark: the gateway beside dcmtk storescp and Orthanc (issue 8).

    python -m tests.perf.bench            # full sizes, 3 runs (make bench)
    python -m tests.perf.bench --quick    # small data, 1 run, a minute or two (make bench-quick)

Each run of each scenario starts a fresh system (its own temporary directory, free loopback
ports), sends the scenario's files with dcmtk ``storescu`` in 1 or 4 parallel associations
(``TCP_NODELAY=1``), then stops the system and removes its directory. Runs are interleaved
(run 1 of every system, then run 2, ...) so drift in the shared machine's load spreads over all
systems. The figures, per system and scenario, are medians over the runs with min and max:

- instances/s and MB/s: files (and their bytes) over the time from the first association
  request to the last C-STORE response, both from storescu's timestamped log;
- latency p50/p95: per C-STORE, from storescu logging "Sending Store Request" to logging the
  response (the request and its data set on the wire, the server's work, the response);
- server CPU seconds and peak RSS: sampled from /proc over the server's process tree during the
  sending (see systems.ProcessMonitor);
- forwarding: from the first association request of the sender to the last file completed at
  the sink (dcmtk storescp), over a relay (Orthanc with a Lua OnStoredInstance, or the gateway);
- API (gateway only, run 1 only): studies search and study detail latency p50/p95/max and
  requests/s over HTTP with concurrent clients, the index bulk-filled with ~1 M instances
  (100 k with --quick); see tests/perf/api_bench.py.

The Markdown table goes to stdout and tests/perf/results/latest.md. Nothing here asserts time.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.perf import api_bench, datagen
from tests.perf.stats import percentile
from tests.perf.systems import (
    CALLING_AE,
    DCMTK_LOG_CONFIG,
    DEFAULT_GATEWAY,
    DEFAULT_WORK_DIR,
    Gateway,
    Orthanc,
    ProcessMonitor,
    Server,
    Sink,
    StoreSCP,
    Usage,
    command_version,
    configure_gateway_forwarding,
    dcmtk_env,
)

RESULTS = Path(__file__).resolve().parent / "results" / "latest.md"
SYSTEM_LABELS = {
    "storescp": "dcmtk storescp",
    "orthanc": "Orthanc",
    "gateway": "dicom-gw",
}
FORWARD_LABELS = {"orthanc": "Orthanc relay (Lua)", "gateway": "dicom-gw"}


@dataclass(frozen=True)
class Scenario:
    key: str
    data: str  # a key of datagen.FULL / QUICK
    associations: int
    forward: bool = False
    storescu_options: tuple[str, ...] = ("-R",)  # propose only the files' own contexts
    note: str = ""
    api: bool = False  # the API benchmark: gateway only, no DICOM data, run once


SCENARIOS: list[Scenario] = [
    Scenario("ct-1", "ct", 1),
    Scenario("ct-4", "ct", 4),
    Scenario("mr-1", "mr", 1),
    Scenario("mr-4", "mr", 4),
    # -R with an RLE file makes storescu pick an uncompressed context and fail to convert;
    # -xr proposes RLE Lossless (and the uncompressed syntaxes) for every storage class.
    Scenario("rle-1", "rle", 1, storescu_options=("-xr",)),
    Scenario("large-1", "large", 1),
    Scenario("huge-1", "huge", 1, note="peak RSS is the figure to watch"),
    Scenario("fwd-ct-1", "ct", 1, forward=True),
    Scenario("fwd-mr-1", "mr", 1, forward=True),
    Scenario("api", "", 0, api=True),
]

# The targets of issue 8, as (scenario, ratio against) -> minimum ratio.
# --quick: one scenario per kind of figure, so the smoke test stays within a minute or two.
QUICK_SCENARIOS = ["ct-1", "mr-4", "rle-1", "huge-1", "fwd-mr-1", "api"]

TARGETS = {
    ("mr-4", "orthanc"): "≥ 1.5",
    ("mr-4", "storescp"): "aim 0.5",
    ("ct-1", "orthanc"): "≥ 1.5",
    ("fwd-ct-1", "orthanc"): "≥ 1.5",
    ("fwd-mr-1", "orthanc"): "≥ 1.5",
}


# --------------------------------------------------------------------------------------------
# Sending with storescu and reading its log

LOG_LINE = re.compile(r"(\d{9,11}) (\d{1,3}\.\d+) (.*)")


@dataclass
class SendResult:
    files: int
    succeeded: int
    first_request: float | None  # epoch seconds
    last_response: float | None
    latencies: list[float]  # seconds, one per C-STORE
    wall: float
    failures: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        if self.first_request is None or self.last_response is None:
            return None
        return max(self.last_response - self.first_request, 1e-6)


def parse_storescu_log(
    text: str,
) -> tuple[int, float | None, float | None, list[float], list[str]]:
    succeeded = 0
    first = last = None
    pending: float | None = None
    latencies: list[float] = []
    failures: list[str] = []
    for line in text.splitlines():
        match = LOG_LINE.search(line)
        if match is None:
            continue
        stamp = int(match.group(1)) + float(match.group(2)) / 1000.0
        message = match.group(3)
        if message.startswith("Requesting Association"):
            first = stamp if first is None else min(first, stamp)
        elif message.startswith("Sending Store Request"):
            pending = stamp
        elif message.startswith("Received Store Response"):
            if "(Success" in message or "(Warning" in message:
                succeeded += 1
            else:
                failures.append(message)
            if pending is not None:
                latencies.append(stamp - pending)
                pending = None
            last = stamp if last is None else max(last, stamp)
        elif "Failed" in message or message.startswith(
            ("Association Rejected", "Association Aborted")
        ):
            failures.append(message)
    return succeeded, first, last, latencies, failures


def send(
    files: Sequence[Path],
    server: Server,
    associations: int,
    options: Sequence[str],
    logdir: Path,
    timeout: float,
) -> SendResult:
    """storescu in `associations` parallel processes, files split round-robin."""
    logdir.mkdir(parents=True, exist_ok=True)
    config = logdir / "storescu-log.cfg"
    config.write_text(DCMTK_LOG_CONFIG)
    groups = [list(files[i::associations]) for i in range(associations)]
    groups = [g for g in groups if g]
    procs = []
    started = time.monotonic()
    for index, group in enumerate(groups):
        log = (logdir / f"storescu-{index}.log").open("wb")
        argv = [
            "storescu",
            "-lc",
            str(config),
            "-aet",
            CALLING_AE,
            "-aec",
            server.ae_title,
            *options,
            "127.0.0.1",
            str(server.port),
            *map(str, group),
        ]
        procs.append(
            (
                subprocess.Popen(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=dcmtk_env(),
                ),
                log,
            )
        )
    failures: list[str] = []
    deadline = started + timeout
    for proc, log in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()  # our own storescu, by its pid
            proc.wait()
            failures.append(f"storescu {proc.pid} timed out after {timeout:.0f}s")
        log.close()
        if proc.returncode not in (0, None):
            failures.append(f"storescu exited with {proc.returncode}")
    wall = time.monotonic() - started
    succeeded, first, last, latencies = 0, None, None, []
    for index in range(len(groups)):
        ok, f, la, lat, fails = parse_storescu_log(
            (logdir / f"storescu-{index}.log").read_text(errors="replace")
        )
        succeeded += ok
        latencies += lat
        failures += fails[:5]
        first = f if first is None or (f is not None and f < first) else first
        last = la if last is None or (la is not None and la > last) else last
    return SendResult(len(files), succeeded, first, last, latencies, wall, failures)


# --------------------------------------------------------------------------------------------
# One measured run


@dataclass
class RunResult:
    system: str
    scenario: Scenario
    run: int
    files: int
    total_bytes: int
    send: SendResult | None = None
    usage: Usage | None = None
    stored: int | None = None
    forward_seconds: float | None = None  # first request -> last file complete at the sink
    # dicom-gw receive runs: first request -> every instance indexed, and the tree's CPU until then
    indexed_seconds: float | None = None
    indexed_cpu_seconds: float | None = None
    error: str | None = None
    api: api_bench.ApiRun | None = None

    @property
    def ok(self) -> bool:
        if self.api is not None:
            return self.error is None and not any(p.errors for p in self.api.phases)
        if self.error or self.send is None:
            return False
        if self.send.succeeded != self.files:
            return False
        return self.stored is None or self.stored >= self.files

    @property
    def seconds(self) -> float | None:
        if self.scenario.forward:
            return self.forward_seconds
        return self.send.duration if self.send else None

    @property
    def inst_per_s(self) -> float | None:
        s = self.seconds
        return self.files / s if s else None

    @property
    def mb_per_s(self) -> float | None:
        s = self.seconds
        return self.total_bytes / 1e6 / s if s else None

    @property
    def accept_inst_per_s(self) -> float | None:
        """For forwarding: how fast the relay accepted the sender's instances."""
        d = self.send.duration if self.send else None
        return self.files / d if d else None


def make_server(system: str, options: argparse.Namespace) -> Server:
    if system == "storescp":
        return StoreSCP(work_root=options.work_dir)
    if system == "orthanc":
        return Orthanc(work_root=options.work_dir)
    if system == "gateway":
        return Gateway(
            work_root=options.work_dir,
            binary=options.gateway,
            processes=options.gateway_processes,
            template=options.gateway_template,
        )
    raise ValueError(system)


def make_gateway_template(options: argparse.Namespace) -> Gateway | None:
    """Start and stop the gateway once: its state dir (initialised, migrated, empty cluster)
    is copied into every later gateway run. None (each run then makes its own) on failure."""
    gateway = Gateway(
        work_root=options.work_dir,
        name="gateway-template",
        binary=options.gateway,
        processes=options.gateway_processes,
    )
    try:
        gateway.start()
    except Exception as exc:
        print(
            f"bench: gateway template failed, each run inits its cluster: {exc}",
            file=sys.stderr,
        )
        gateway.stop()
        gateway.remove()
        return None
    gateway.stop()
    if not gateway.stopped_cleanly():
        gateway.remove()
        return None
    return gateway


def run_receive(
    system: str,
    scenario: Scenario,
    data: datagen.DataSet,
    run: int,
    options: argparse.Namespace,
) -> RunResult:
    result = RunResult(system, scenario, run, data.count, data.total_bytes)
    server = make_server(system, options)
    try:
        server.start()
        monitor = ProcessMonitor(server.root_pids())
        monitor.start()
        try:
            result.send = send(
                data.files,
                server,
                scenario.associations,
                scenario.storescu_options,
                server.workdir / "sender",
                options.send_timeout,
            )
            sending_cpu = monitor.cpu_seconds()
            if isinstance(server, Gateway) and result.send.first_request is not None:
                # The gateway answers once the file and its job are durable and indexes after.
                done = server.wait_indexed(result.send.succeeded, options.send_timeout)
                result.indexed_seconds = done - result.send.first_request
                result.indexed_cpu_seconds = monitor.cpu_seconds()
        finally:
            result.usage = monitor.stop()
        result.usage.cpu_seconds = sending_cpu
        result.stored = server.stored_count()
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        if options.verbose:
            traceback.print_exc()
    finally:
        try:
            server.stop()
        finally:
            if not options.keep:
                server.remove()
    return result


def run_forward(
    system: str,
    scenario: Scenario,
    data: datagen.DataSet,
    run: int,
    options: argparse.Namespace,
) -> RunResult:
    result = RunResult(system, scenario, run, data.count, data.total_bytes)
    sink = Sink(work_root=options.work_dir)
    relay: Server | None = None
    try:
        sink.start()
        if system == "orthanc":
            relay = Orthanc(
                work_root=options.work_dir,
                name="orthanc-relay",
                ae_title="RELAY",
                relay_to=(sink.ae_title, "127.0.0.1", sink.port),
            )
            relay.start()
        elif system == "gateway":
            relay = make_server("gateway", options)
            relay.start()
            assert isinstance(relay, Gateway)
            reason = configure_gateway_forwarding(relay, sink)
            if reason is not None:
                raise SkipScenario(reason)
        else:
            raise SkipScenario(f"{system} does not forward")
        monitor = ProcessMonitor(relay.root_pids())
        monitor.start()
        try:
            result.send = send(
                data.files,
                relay,
                scenario.associations,
                scenario.storescu_options,
                relay.workdir / "sender",
                options.send_timeout,
            )
            assert sink.watcher is not None
            if not sink.watcher.wait_for(data.count, stall_timeout=options.stall_timeout):
                result.error = (
                    f"sink stalled at {sink.watcher.count}/{data.count} files "
                    f"(no new file for {options.stall_timeout:.0f}s)"
                )
        finally:
            result.usage = monitor.stop()
        result.stored = sink.stored_count()
        if result.send.first_request is not None and sink.stored_count():
            last = max(entry.stat().st_mtime for entry in os.scandir(sink.storage))
            result.forward_seconds = max(last - result.send.first_request, 1e-6)
    except SkipScenario:
        raise
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        if options.verbose:
            traceback.print_exc()
    finally:
        for server in (relay, sink):
            if server is None:
                continue
            try:
                server.stop()
            finally:
                if not options.keep:
                    server.remove()
    return result


def run_api(scenario: Scenario, run: int, options: argparse.Namespace) -> RunResult:
    """The gateway started as for receiving, its index bulk-filled, then timed over HTTP."""
    result = RunResult("gateway", scenario, run, options.api_instances, 0)
    gateway = make_server("gateway", options)
    assert isinstance(gateway, Gateway)
    try:
        gateway.start()
        result.api = api_bench.run_api(
            gateway,
            options.api_instances,
            options.api_clients,
            options.api_seconds,
            lambda text: print(text, file=sys.stderr, flush=True) if options.verbose else None,
        )
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        if options.verbose:
            traceback.print_exc()
    finally:
        try:
            gateway.stop()
        finally:
            if not options.keep:
                gateway.remove()
    return result


class SkipScenario(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Report


def fmt(value: float | None, digits: int = 0) -> str:
    """Thousands separators; small values get more decimals (2.4 inst/s, not 2)."""
    if value is None:
        return "–"
    if digits == 0 and abs(value) < 10:
        digits = 1 if abs(value) >= 1 else 2
    return f"{value:,.{digits}f}"


def spread(values: list[float], digits: int = 0) -> str:
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, digits)
    return f"{fmt(med, digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})"


def median_of(
    results: list[RunResult], getter: Callable[[RunResult], float | None]
) -> float | None:
    values = [v for r in results if (v := getter(r)) is not None]
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}"


def versions(options: argparse.Namespace) -> list[tuple[str, str]]:
    gateway = Gateway(binary=options.gateway)
    cpu_model = "unknown"
    with open("/proc/cpuinfo") as fp:
        for line in fp:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as fp:
        for line in fp:
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    return [
        ("dcmtk (storescu, storescp)", command_version(["storescu", "--version"])),
        ("Orthanc", Orthanc.version()),
        ("gateway", gateway.version() if gateway.binary.exists() else "not installed"),
        ("harness", f"Python {platform.python_version()} ({sys.executable})"),
        ("CPU", f"{os.cpu_count()} × {cpu_model}"),
        ("memory", f"{mem_kb / 1024 / 1024:.1f} GiB"),
        ("kernel", platform.release()),
    ]


def report(
    results: list[RunResult],
    options: argparse.Namespace,
    specs: dict[str, datagen.DataSpec],
    data_sizes: dict[str, tuple[int, int]],
    skipped: list[str],
    elapsed: float,
) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick" if options.quick else "full"
    lines = [
        "# dicom-gw benchmark",
        "",
        (
            f"{now}; mode **{mode}**, {options.runs} run(s) per figure (median, (min–max) when "
            f"more than one); total {elapsed / 60:.1f} min. One machine, shared and noisy: "
            "compare systems within this run, not with other runs."
        ),
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in versions(options)]
    if data_sizes:
        lines += ["", "Data (seeded, generated by tests/perf/datagen.py):", ""]
    for name, spec in specs.items():
        if name in data_sizes:
            count, size = data_sizes[name]
            lines.append(
                f"- `{name}`: {count} × {spec.rows}×{spec.columns}"
                f"{f'×{spec.frames} frames' if spec.frames > 1 else ''} 16-bit"
                f"{', RLE Lossless' if name == 'rle' else ''}, {size / 1e6:,.0f} MB"
            )

    by_key: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        by_key.setdefault((r.scenario.key, r.system), []).append(r)

    def good(scenario: str, system: str) -> list[RunResult]:
        return [r for r in by_key.get((scenario, system), []) if r.ok]

    receive = [
        s for s in SCENARIOS if not s.forward and not s.api and s.key in options.scenario_keys
    ]
    forward = [s for s in SCENARIOS if s.forward and s.key in options.scenario_keys]

    if receive:
        lines += [
            "",
            "## Receive",
            "",
            (
                "Senders: dcmtk storescu, N parallel associations (scenario `-N`), TCP_NODELAY=1. "
                "Latency: storescu's request→response per C-STORE. CPU and memory: the server's "
                "process tree (for dicom-gw with its PostgreSQL)."
            ),
            "",
            (
                "| scenario | system | inst/s | MB/s | latency p50 / p95 ms | server CPU s | "
                "CPU ms/inst | peak memory MB: tree PSS / largest RSS | runs ok |"
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for scenario in receive:
            for system in options.system_list:
                all_runs = by_key.get((scenario.key, system), [])
                if not all_runs:
                    continue
                ok = good(scenario.key, system)
                ips = [r.inst_per_s for r in ok if r.inst_per_s]
                mbs = [r.mb_per_s for r in ok if r.mb_per_s]
                p50 = median_of(ok, lambda r: percentile(r.send.latencies, 50) if r.send else None)
                p95 = median_of(ok, lambda r: percentile(r.send.latencies, 95) if r.send else None)
                cpu = median_of(ok, lambda r: r.usage.cpu_seconds if r.usage else None)
                tree = max((r.usage.peak_tree_pss_mb for r in ok if r.usage), default=None)
                proc = max((r.usage.peak_process_rss_mb for r in ok if r.usage), default=None)
                per_inst = cpu * 1000 / ok[0].files if cpu is not None and ok else None
                lines.append(
                    f"| {scenario.key} | {SYSTEM_LABELS[system]} | {spread(ips)} | {spread(mbs)} | "
                    f"{fmt(p50 and p50 * 1000, 1)} / {fmt(p95 and p95 * 1000, 1)} | {fmt(cpu, 2)} | "
                    f"{fmt(per_inst, 1)} | {fmt(tree)} / {fmt(proc)} | {len(ok)}/{len(all_runs)} |"
                )
        indexed = [s for s in receive if any(r.indexed_seconds for r in good(s.key, "gateway"))]
        if indexed:
            lines += [
                "",
                (
                    "dicom-gw indexes after it answers (the file and its ingest job are durable "
                    "first). Until every instance is indexed, from the first association request:"
                ),
                "",
                "| scenario | last response s | all indexed s | CPU s until indexed | CPU ms/inst |",
                "|---|---|---|---|---|",
            ]
        for scenario in indexed:
            ok = [r for r in good(scenario.key, "gateway") if r.indexed_seconds]
            sent = median_of(ok, lambda r: r.seconds)
            done = median_of(ok, lambda r: r.indexed_seconds)
            cpu = median_of(ok, lambda r: r.indexed_cpu_seconds)
            per_inst = cpu * 1000 / ok[0].files if cpu is not None else None
            lines.append(
                f"| {scenario.key} | {fmt(sent, 1)} | {fmt(done, 1)} | {fmt(cpu, 2)} | "
                f"{fmt(per_inst, 1)} |"
            )
    if forward:
        lines += [
            "",
            "## Forward (receive, store, send on to a dcmtk storescp sink)",
            "",
            (
                "End to end: from the sender's first association request to the last file "
                "complete at the sink. Accepted: the sender's own rate into the relay. CPU and "
                "memory: the relay's process tree (not the sink)."
            ),
            "",
            (
                "| scenario | system | end-to-end s | end-to-end inst/s | accepted inst/s | "
                "relay CPU s | peak memory MB: tree PSS / largest RSS | runs ok |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        for scenario in forward:
            for system in options.system_list:
                all_runs = by_key.get((scenario.key, system), [])
                if not all_runs:
                    continue
                ok = good(scenario.key, system)
                secs = [r.forward_seconds for r in ok if r.forward_seconds]
                ips = [r.inst_per_s for r in ok if r.inst_per_s]
                acc = [r.accept_inst_per_s for r in ok if r.accept_inst_per_s]
                cpu = median_of(ok, lambda r: r.usage.cpu_seconds if r.usage else None)
                tree = max((r.usage.peak_tree_pss_mb for r in ok if r.usage), default=None)
                proc = max((r.usage.peak_process_rss_mb for r in ok if r.usage), default=None)
                lines.append(
                    f"| {scenario.key} | {FORWARD_LABELS.get(system, system)} | {spread(secs, 1)} | "
                    f"{spread(ips)} | {spread(acc)} | {fmt(cpu, 2)} | {fmt(tree)} / {fmt(proc)} | "
                    f"{len(ok)}/{len(all_runs)} |"
                )

    if "gateway" in options.system_list and (receive or forward):
        lines += [
            "",
            "## Ratios (dicom-gw ÷ other, median inst/s; > 1 means the gateway is faster)",
            "",
            "| scenario | dicom-gw / Orthanc | dicom-gw / dcmtk storescp | issue 8 target |",
            "|---|---|---|---|",
        ]
        for scenario in receive + forward:
            gw = median_of(good(scenario.key, "gateway"), lambda r: r.inst_per_s)
            orth = median_of(good(scenario.key, "orthanc"), lambda r: r.inst_per_s)
            dcm = median_of(good(scenario.key, "storescp"), lambda r: r.inst_per_s)
            targets = [
                f"{TARGETS[(scenario.key, other)]} vs {other}"
                for other in ("orthanc", "storescp")
                if (scenario.key, other) in TARGETS
            ]
            if scenario.key == "huge-1":
                targets.append("SCP peak RSS < 300 MB")
            lines.append(
                f"| {scenario.key} | {ratio(gw, orth)} | "
                f"{'–' if scenario.forward else ratio(gw, dcm)} | {'; '.join(targets)} |"
            )

    api_runs = [r for r in results if r.api is not None and r.api.population is not None]
    if api_runs:
        lines += api_report(api_runs[0])

    failed = [r for r in results if not r.ok]
    if skipped or failed:
        lines += ["", "## Skipped and failed", ""]
        lines += [f"- skipped: {reason}" for reason in skipped]
        for r in failed:
            why = r.error or ""
            if r.send is not None and r.send.succeeded != r.files:
                why += f" {r.send.succeeded}/{r.files} C-STOREs succeeded"
                if r.send.failures:
                    why += f" ({'; '.join(r.send.failures[:3])})"
            if r.stored is not None and r.stored < r.files:
                why += f"; {r.stored}/{r.files} stored"
            if r.api is not None:
                why += "; ".join(f"{p.endpoint}: {p.errors[0]}" for p in r.api.phases if p.errors)
            lines.append(f"- {r.scenario.key} {r.system} run {r.run}: {why.strip()}")
    lines += [
        "",
        "Reading it: docs/performance.md. Rerun: `make bench` (full) or `make bench-quick`.",
        "",
    ]
    return "\n".join(lines)


def api_summary(result: RunResult) -> str:
    """One progress line for stderr."""
    if result.api is None or result.api.population is None:
        return f"FAILED: {result.error}"
    parts = [f"{result.api.population.instances:,} instances"]
    for phase in result.api.phases:
        p95 = percentile(phase.all_latencies, 95)
        rate = phase.requests / phase.seconds if phase.seconds else 0.0
        parts.append(
            f"{phase.endpoint} p95 {fmt(p95 and p95 * 1000, 1)} ms, {rate:.1f} req/s"
            + (f" ({len(phase.errors)} client errors)" if phase.errors else "")
        )
    if result.error:
        parts.append(f"FAILED: {result.error}")
    return "; ".join(parts)


def api_report(result: RunResult) -> list[str]:
    """The "## API" section: one row per endpoint, the search also per filter."""
    assert result.api is not None and result.api.population is not None
    pop = result.api.population
    lines = [
        "",
        "## API (dicom-gw: studies search and study detail over HTTP)",
        "",
        (
            f"**{pop.instances:,} instances** indexed ({pop.studies:,} studies, {pop.series:,} "
            f"series, {pop.patients:,} patients; bulk-generated in the gateway's PostgreSQL in "
            f"{pop.seconds:.0f} s, then VACUUM ANALYZE). {result.api.clients} concurrent clients "
            "(threads, one keep-alive HTTP connection each) as a viewer with a bearer token, "
            "each endpoint for a fixed time; latency is request sent to last body byte, and "
            "includes authentication and the audit row every PHI read writes. Search: page 1 "
            "of 25, the filters in turn. Target (issue 8): study search p95 < "
            f"{api_bench.TARGET_P95_MS:.0f} ms with 1 M instances."
        ),
        "",
        "| endpoint | requests | req/s | p50 ms | p95 ms | max ms | server CPU s | target |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(label: str, values: list[float], seconds: float, cpu: str, target: str) -> str:
        p50, p95 = percentile(values, 50), percentile(values, 95)
        rate = len(values) / seconds if seconds else None
        return (
            f"| {label} | {len(values):,} | {fmt(rate, 1)} | {fmt(p50 and p50 * 1000, 1)} | "
            f"{fmt(p95 and p95 * 1000, 1)} | {fmt(max(values, default=0) * 1000, 1)} | {cpu} | "
            f"{target} |"
        )

    for phase in result.api.phases:
        values = phase.all_latencies
        cpu = fmt(phase.usage.cpu_seconds, 1) if phase.usage else "–"
        if phase.endpoint == "search":
            p95 = percentile(values, 95)
            met = p95 is not None and p95 * 1000 < api_bench.TARGET_P95_MS
            verdict = "met" if met else "**missed**"
            target = f"p95 < {api_bench.TARGET_P95_MS:.0f} ms: {verdict}"
            if pop.instances < api_bench.FULL_INSTANCES * 0.9:
                target += " (the target is for 1 M: indicative only)"
            lines.append(row("**studies search, all**", values, phase.seconds, cpu, target))
            # The name search decrypts every patient's name: its seconds would hide the rest.
            others = [v for k, vs in phase.latencies.items() if k != "patient name" for v in vs]
            lines.append(row("studies search, all but patient name", others, phase.seconds, "", ""))
            for kind in api_bench.SEARCH_KINDS:
                kind_values = phase.latencies.get(kind, [])
                if kind_values:
                    lines.append(row(f"— {kind}", kind_values, phase.seconds, "", ""))
        else:
            lines.append(row("**study detail**", values, phase.seconds, cpu, ""))
    lines += [
        "",
        (
            "Per-filter req/s share the phase's time with the other filters. Server CPU: the "
            "gateway's whole process tree (API workers, PostgreSQL) during the phase; the "
            "clients run on the same 2 cores."
        ),
    ]
    return lines


# --------------------------------------------------------------------------------------------


def warm(files: Sequence[Path]) -> None:
    """Read the files once so every system is sent from the page cache."""
    for path in files:
        with path.open("rb", buffering=0) as fp:
            while fp.read(1 << 20):
                pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="dicom-gw receive/forward benchmark (issue 8)")
    parser.add_argument("--quick", action="store_true", help="small data, 1 run (smoke test)")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument("--systems", default="storescp,orthanc,gateway")
    parser.add_argument(
        "--scenarios",
        help=f"comma-separated scenario keys (default: all; --quick: {','.join(QUICK_SCENARIOS)})",
    )
    parser.add_argument(
        "--gateway",
        type=Path,
        default=Path(os.environ.get("DICOM_GW_BIN", DEFAULT_GATEWAY)),
        help="the dicom-gw executable (default .venv/bin/dicom-gw)",
    )
    parser.add_argument(
        "--gateway-processes",
        type=int,
        default=0,
        help="[dicom] processes for the gateway (0: its default)",
    )
    parser.add_argument(
        "--gateway-fresh-cluster",
        action="store_true",
        help="let every gateway run initdb its own cluster (default: copy one made at the start)",
    )
    parser.add_argument("--data-dir", type=Path, default=datagen.DEFAULT_DATA_DIR)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK_DIR,
        help="where systems get their temporary directories (a real disk)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--send-timeout", type=float, default=900.0)
    parser.add_argument(
        "--stall-timeout",
        type=float,
        help="forwarding fails when no file reaches the sink for this long (60 s; quick 30 s)",
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        help="after run 1, drop later runs that would not fit (default: 14 "
        "for full, none for --quick)",
    )
    parser.add_argument(
        "--api-instances",
        type=int,
        help=f"instances bulk-generated for the api scenario "
        f"(default {api_bench.FULL_INSTANCES:,}; quick {api_bench.QUICK_INSTANCES:,})",
    )
    parser.add_argument("--api-clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument(
        "--api-seconds", type=float, help="time per API endpoint (default 30 s; quick 10 s)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the systems' directories")
    parser.add_argument("--verbose", "-v", action="store_true")
    options = parser.parse_args(argv)
    options.runs = options.runs or (1 if options.quick else 3)
    options.gateway_template = None
    if options.budget_minutes is None and not options.quick:
        options.budget_minutes = 14.0
    options.system_list = [s.strip() for s in options.systems.split(",") if s.strip()]
    options.stall_timeout = options.stall_timeout or (30.0 if options.quick else 60.0)
    options.api_instances = options.api_instances or (
        api_bench.QUICK_INSTANCES if options.quick else api_bench.FULL_INSTANCES
    )
    options.api_seconds = options.api_seconds or (10.0 if options.quick else 30.0)
    scenarios = options.scenarios or ",".join(
        QUICK_SCENARIOS if options.quick else [s.key for s in SCENARIOS]
    )
    options.scenario_keys = [s.strip() for s in scenarios.split(",") if s.strip()]
    unknown = set(options.system_list) - set(SYSTEM_LABELS)
    unknown |= set(options.scenario_keys) - {s.key for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown system or scenario: {', '.join(sorted(unknown))}")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    started = time.monotonic()

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    skipped: list[str] = []
    if "orthanc" in options.system_list:
        try:
            Orthanc.ensure_installed()
        except (OSError, subprocess.CalledProcessError) as exc:
            skipped.append(f"Orthanc: not installed and apt-get failed ({exc})")
            options.system_list.remove("orthanc")
    if "gateway" in options.system_list:
        reason = Gateway(binary=options.gateway).available()
        if reason:
            skipped.append(f"dicom-gw: {reason}")
            options.system_list.remove("gateway")

    scenarios = [s for s in SCENARIOS if s.key in options.scenario_keys]
    if any(s.api for s in scenarios) and "gateway" not in options.system_list:
        skipped.append("api: the API benchmark measures dicom-gw only (not among --systems)")
    specs = datagen.specs(options.quick)
    data = {
        name: datagen.ensure(specs[name], options.data_dir)
        for name in dict.fromkeys(s.data for s in scenarios if not s.api)
    }
    for dataset in data.values():
        warm(dataset.files)
    template: Gateway | None = None
    if "gateway" in options.system_list and not options.gateway_fresh_cluster:
        template = make_gateway_template(options)
        options.gateway_template = template.state_dir if template is not None else None
    say(
        f"bench: data ready after {time.monotonic() - started:.0f}s; systems "
        f"{', '.join(options.system_list)}; {options.runs} run(s)"
    )

    results: list[RunResult] = []
    skip_forward: set[str] = set()
    took: dict[tuple[str, str], float] = {}  # seconds each (scenario, system) took in run 1
    dropped: set[tuple[str, str]] = set()  # failed once: not repeated (a stall costs minutes)
    options.planned_runs = options.runs
    run = 0
    while run < options.runs:
        run += 1
        run_started = time.monotonic()
        for scenario in scenarios:
            for system in options.system_list:
                if scenario.forward and (system not in FORWARD_LABELS or system in skip_forward):
                    continue
                # The API benchmark is the gateway's alone, and once: its 1 M rows take a while
                # to generate, and its figures are over thousands of requests already.
                if scenario.api and (system != "gateway" or run > 1):
                    continue
                label = f"[run {run}/{options.runs}] {scenario.key:9} {system:9}"
                item = (scenario.key, system)
                if item in dropped:
                    continue
                if options.budget_minutes and item in took:
                    left = options.budget_minutes * 60 - (time.monotonic() - started)
                    if took[item] > left:
                        skipped.append(
                            f"run {run} of {scenario.key} on {SYSTEM_LABELS[system]}: "
                            f"no time left in the {options.budget_minutes}-min budget"
                        )
                        say(f"{label} skipped: out of time budget")
                        continue
                item_started = time.monotonic()
                if scenario.api:
                    result = run_api(scenario, run, options)
                    results.append(result)
                    say(f"{label} {api_summary(result)}")
                    if not result.ok:
                        dropped.add(item)
                    continue
                dataset = data[scenario.data]
                try:
                    if scenario.forward:
                        result = run_forward(system, scenario, dataset, run, options)
                    else:
                        result = run_receive(system, scenario, dataset, run, options)
                except SkipScenario as skip:
                    skipped.append(f"forwarding through {SYSTEM_LABELS[system]}: {skip}")
                    skip_forward.add(system)
                    say(f"{label} skipped: {skip}")
                    continue
                results.append(result)
                took.setdefault(item, time.monotonic() - item_started)
                if result.ok:
                    lat = percentile(result.send.latencies, 50) if result.send else None
                    extra = (
                        f", end-to-end {result.forward_seconds:.1f}s"
                        if scenario.forward and result.forward_seconds
                        else ""
                    )
                    say(
                        f"{label} {fmt(result.inst_per_s)} inst/s, {fmt(result.mb_per_s)} MB/s, "
                        f"p50 {fmt(lat and lat * 1000, 1)} ms, CPU "
                        f"{fmt(result.usage.cpu_seconds if result.usage else None, 1)} s{extra}"
                    )
                else:
                    dropped.add(item)
                    say(
                        f"{label} FAILED (not repeated): {result.error or ''} "
                        f"{result.send.succeeded if result.send else 0}/{result.files} sent, "
                        f"stored {result.stored}"
                    )
        # Keep `make bench` within its time limit: drop runs that would not fit the budget,
        # estimating a run from what each scenario and system still to be repeated took.
        per_run = sum(t for item, t in took.items() if item not in dropped) or (
            time.monotonic() - run_started
        )
        if options.budget_minutes and run < options.runs:
            left = options.budget_minutes * 60 - (time.monotonic() - started)
            fit = run + max(0, int(left // per_run))
            if fit < options.runs:
                options.runs = max(run, fit)
                note = (
                    f"runs cut from {options.planned_runs} to {options.runs}: a run takes about "
                    f"{per_run / 60:.1f} min and the budget is {options.budget_minutes} min"
                )
                skipped.append(note)
                say(f"bench: {note}")

    if template is not None and not options.keep:
        template.remove()
    elapsed = time.monotonic() - started
    sizes = {name: (d.count, d.total_bytes) for name, d in data.items()}
    text = report(results, options, specs, sizes, skipped, elapsed)
    print(text)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(text)
    say(f"bench: written to {options.output} after {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
