"""The load soak (`-m soak`): mixed CT/MR studies from 4 senders to 2 destinations, one of which
flaps, the API polled by concurrent clients, the memory of every process sampled, and the
invariant checker clean at the end. 10 minutes unless DICOM_GW_SOAK_SECONDS says otherwise."""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from tests.conftest import Gateway, free_port
from tests.dicom_data import ct_series
from tests.reliability.harness import (
    BACKOFF,
    FAST_FORWARD,
    CopySink,
    Supervised,
    children,
    rss_kib,
    service_args,
)
from tests.reliability.invariants import SendRecord, SteadyLoad, check_when_settled
from tests.support import wait_for

SENDERS = ("MOD1", "MOD2", "MOD3", "MOD4")


def _tree(pid: int) -> dict[int, str]:
    """Every process under `dicom-gw run`, named by the command it runs."""
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        parent = stack.pop()
        for child in children(parent):
            found[child] = f"{' '.join(service_args(child))} ({child})"
            stack.append(child)
    return found


def _api(base: str, token: str | None, method: str, path: str, body: object = None) -> int:
    request = urllib.request.Request(
        base + path, method=method, data=json.dumps(body).encode() if body is not None else None
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


SOAK_SECONDS = float(os.environ.get("DICOM_GW_SOAK_SECONDS", "600"))


@pytest.mark.soak
# The load itself, plus start-up, the final drain to both sinks and the invariant checker.
@pytest.mark.timeout(SOAK_SECONDS + 900)
def test_mixed_load_with_a_flapping_destination_and_api_clients(
    make_gateway: Callable[..., Gateway],
    copy_sinks: Callable[..., CopySink],
    tmp_path: Path,
    report: Callable[..., object],
) -> None:
    duration = SOAK_SECONDS
    api_port = free_port()
    gw = make_gateway(
        dicom={"allowed_callers": [{"ae_title": t} for t in (*SENDERS, "ECHOSCU")]},
        run={"state_dir": str(tmp_path / "var")},
        api={"port": api_port, "workers": 2},
        cleanup={"enabled": False},
        forward=FAST_FORWARD,
    )
    steady, flappy = copy_sinks("STEADY"), copy_sinks("FLAPPY")
    gw.add_destination("steady", "STEADY", steady.port, *BACKOFF)
    gw.add_destination("flappy", "FLAPPY", flappy.port, *BACKOFF)
    gw.add_rule("ct", "--when", "modality:equals:CT", "--to", "steady", "--to", "flappy")
    gw.add_rule("mr", "--when", "modality:equals:MR", "--to", "steady")
    run = Supervised(gw, api_port)
    wait_for(run.ready, timeout=120, what="`dicom-gw run` with every service up")
    base = f"http://127.0.0.1:{api_port}"
    password = (tmp_path / "var" / "secrets" / "admin-password").read_text().strip()

    stop = threading.Event()
    ends = time.monotonic() + duration
    record = SendRecord()
    studies: Counter[str] = Counter()
    api_codes: Counter[int] = Counter()
    flaps = 0
    errors: list[BaseException] = []

    def sender(index: int, calling: str) -> None:
        rng = random.Random(index)
        try:
            for number in range(100_000):
                if stop.is_set() or time.monotonic() > ends:
                    return
                modality = "CT" if rng.random() < 0.6 else "MR"
                files = ct_series(
                    tmp_path / calling / f"{number:05d}",
                    count=rng.randint(5, 15),
                    size=64,
                    seed=index * 100_000 + number,
                    modality=modality,
                )
                SteadyLoad(gw.port, files, record=record, per_association=len(files),
                           rounds=10, deadline=120, calling=calling).run_and_finish()  # fmt: skip
                studies[modality] += 1
                stop.wait(rng.uniform(0.2, 1.0))
        except BaseException as exc:
            errors.append(exc)

    def flapper() -> None:
        nonlocal flaps
        try:
            while not stop.wait(15) and time.monotonic() < ends - 20:
                flappy.stop()
                flaps += 1
                if stop.wait(15):
                    break
                flappy.start()
        except BaseException as exc:
            errors.append(exc)
        finally:
            if flappy.process is None:
                flappy.start()

    def poller() -> None:
        token = None
        try:
            while not stop.is_set() and time.monotonic() < ends:
                if token is None:
                    request = urllib.request.Request(
                        base + "/api/v1/auth/login", method="POST",
                        data=json.dumps({"username": "admin", "password": password}).encode(),
                    )  # fmt: skip
                    request.add_header("Content-Type", "application/json")
                    with urllib.request.urlopen(request, timeout=15) as response:
                        token = json.loads(response.read())["access_token"]
                for path in ("/api/v1/studies?page_size=20", "/api/v1/queue/counts",
                             "/api/v1/health", "/api/v1/queue/deliveries?state=retry"):  # fmt: skip
                    api_codes[_api(base, token, "GET", path)] += 1
                stop.wait(0.3)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(i, t)) for i, t in enumerate(SENDERS)]
    threads += [threading.Thread(target=flapper)] + [
        threading.Thread(target=poller) for _ in range(3)
    ]
    processes = _tree(run.process.pid)
    samples: dict[int, list[int]] = {pid: [] for pid in processes}
    for thread in threads:
        thread.start()
    try:
        while time.monotonic() < ends and not errors:
            for pid in processes:
                samples[pid].append(rss_kib(pid))
            stop.wait(min(10.0, max(0.1, ends - time.monotonic())))
    finally:
        stop.set()
        for thread in threads:
            thread.join(180)
    assert not errors, errors
    assert flappy.process is not None

    def route(uid: str, source: Path) -> list[str]:
        modality = pydicom.dcmread(source, stop_before_pixels=True).Modality
        return ["steady", "flappy"] if modality == "CT" else ["steady"]

    result = check_when_settled(
        record, gw.db_url, gw.storage,
        {"steady": steady.directory, "flappy": flappy.directory}, route, timeout=300,
    )  # fmt: skip
    survivors = _tree(run.process.pid)
    growth = {}
    for pid, name in processes.items():
        series = [s for s in samples[pid] if s]
        if len(series) >= 4:
            baseline = series[len(series) // 4]
            growth[name] = (series[-1] - baseline) // 1024
    worst = max(growth.items(), key=lambda kv: kv[1]) if growth else ("-", 0)
    report(
        f"soak: {duration:.0f} s, 4 senders CT/MR, 2 destinations (1 flapping), 3 API clients",
        cases=len(record.sent),
        outcome=f"{sum(studies.values())} studies {dict(studies)}; {flaps} flaps; API "
        f"{dict(api_codes)}; worst RSS growth {worst[0]} +{worst[1]} MB",
        lost=result.lost,
        duplicated=result.duplicated,
    )
    assert result.ok, result.explain()
    assert set(survivors) >= set(processes), "a process was restarted during the soak"
    assert all(code < 500 and code != 0 for code in api_codes), api_codes
    for name, megabytes in growth.items():
        assert megabytes < 64, f"{name}: RSS grew {megabytes} MB after warm-up"
