"""Bad input: a PDU-level fuzzer and data set mutations against the SCP while valid traffic flows
beside them, an association flood beyond the configured maximum, and old TLS / weak ciphers.

The fast set runs a few thousand seeded cases within a time budget; `-m soak` (or
DICOM_GW_SOAK=1) runs 10,000+ PDU cases and 2,000 data set mutations.
"""

from __future__ import annotations

import random
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import AllTransferSyntaxes
from pynetdicom.sop_class import _STORAGE_CLASSES as STORAGE_CLASSES

from tests.conftest import Gateway, free_port
from tests.dicom_data import ct_series, pydicom_test_files
from tests.reliability import fuzz
from tests.reliability.harness import receivers, rss_kib
from tests.reliability.invariants import (
    SendRecord,
    SteadyLoad,
    check_when_settled,
    file_meta,
    send_files,
    settled,
)
from tests.support import dataset_bytes, wait_for

SEED = 20261128


def _soak(request: pytest.FixtureRequest) -> bool:
    from tests.reliability.conftest import soak_enabled

    return soak_enabled(request.config)


@pytest.fixture
def fuzz_gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    """SCP (2 receivers) and an ingest worker, with short ACSE/network timeouts so that a peer
    that stops talking is dropped quickly."""
    gw = make_gateway(
        dicom={"acse_timeout_seconds": 5, "network_timeout_seconds": 5, "max_associations": 32}
    )
    gw.start_scp()
    gw.start_ingest()
    return gw


def _receiver_state(gw: Gateway) -> dict[int, int]:
    return {pid: rss_kib(pid) for pid in receivers(gw.processes["scp"].pid)}


# -- PDU fuzzer ----------------------------------------------------------------------------------


def _pdu_fuzz(
    gw: Gateway, tmp_path: Path, count: int, budget: float, report: Callable[..., object]
) -> None:
    before = _receiver_state(gw)
    assert len(before) == 2
    # Valid traffic beside the fuzzer: every one of its instances must be acknowledged.
    valid = ct_series(tmp_path / "valid", count=max(120, count // 25), size=32)
    load = SteadyLoad(gw.port, valid, per_association=2, interval=0.25, rounds=1)
    load.start()

    rng = random.Random(SEED)
    cases = [fuzz.make_case(rng) for _ in range(count)]
    outcomes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    violations: list[str] = []
    peak: dict[int, int] = dict(before)
    ends = time.monotonic() + budget
    tried = 0

    def one(index: int) -> None:
        if time.monotonic() > ends:
            return
        result = fuzz.run_case(gw.port, cases[index])
        outcomes[result.outcome] += 1
        kinds[cases[index].kind.split(" #")[0]] += 1
        for problem in result.violations():
            violations.append(f"case {index} (seed {SEED}, {cases[index].kind}): {problem}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, count, 200):
            list(pool.map(one, range(start, min(start + 200, count))))
            tried = min(start + 200, count)
            for pid in before:
                peak[pid] = max(peak[pid], rss_kib(pid))
            if time.monotonic() > ends:
                break
    tried = sum(outcomes.values())
    load.stop()
    record = load.finish()

    after = _receiver_state(gw)
    result = check_when_settled(record, gw.db_url, gw.storage, timeout=60)
    growth = max(peak[pid] - before[pid] for pid in before) // 1024
    report(
        "PDU fuzzer (A-ASSOCIATE, P-DATA, lengths, PDV flags, abrupt closes)",
        cases=tried,
        outcome=", ".join(f"{k} {v}" for k, v in outcomes.most_common())
        + f"; receiver RSS +{growth} MB; {len(violations)} violations",
        lost=result.lost,
        duplicated=result.duplicated,
    )
    assert violations == [], "\n".join(violations[:20])
    assert set(after) == set(before), "a receiver process died (the scp parent restarted it)"
    assert growth < 64, f"receiver RSS grew by {growth} MB"
    assert tried >= min(count, 1000), f"only {tried} cases within the time budget"
    # The valid sender beside the fuzzer saw nothing but success, and everything is indexed.
    assert record.failures() == 0, (record.statuses(), record.errors()[:5])
    assert result.ok, result.explain()
    assert gw.echo_ok()


def test_pdu_fuzzer_never_stops_the_scp(
    fuzz_gateway: Gateway, tmp_path: Path, report: Callable[..., object]
) -> None:
    _pdu_fuzz(fuzz_gateway, tmp_path, count=4000, budget=90, report=report)


@pytest.mark.soak
def test_pdu_fuzzer_soak(
    fuzz_gateway: Gateway, tmp_path: Path, report: Callable[..., object]
) -> None:
    _pdu_fuzz(fuzz_gateway, tmp_path, count=15000, budget=1200, report=report)


# -- data set mutations ----------------------------------------------------------------------------


def _mutation_sources() -> list[Path]:
    """pydicom's test files the SCP can take: a storage SOP class, a transfer syntax it accepts,
    small enough to mutate by the thousand."""
    syntaxes = {str(uid) for uid in AllTransferSyntaxes}
    storage = set(map(str, STORAGE_CLASSES.values()))
    sources = []
    for path in pydicom_test_files():
        if path.stat().st_size > 256 * 1024:
            continue
        sop_class, _, syntax = file_meta(path)
        if sop_class in storage and syntax in syntaxes:
            sources.append(path)
    return sources


def _dataset_mutations(
    gw: Gateway, tmp_path: Path, count: int, budget: float, report: Callable[..., object]
) -> None:
    sources = _mutation_sources()
    assert len(sources) >= 20, len(sources)
    rng = random.Random(SEED)
    ingest_pid = gw.processes["ingest"].pid
    scp_before = _receiver_state(gw)
    mutated: list[Path] = []
    mutations: Counter[str] = Counter()
    for index in range(count):
        path, mutation = fuzz.mutate_file(
            rng.choice(sources), tmp_path / "mutated" / f"{index:05d}.dcm", rng
        )
        mutated.append(path)
        mutations[mutation] += 1

    record = SendRecord()
    ends = time.monotonic() + budget
    for start in range(0, len(mutated), 16):
        if time.monotonic() > ends:
            break
        send_files(gw.port, mutated[start : start + 16], record)
    acknowledged = record.acknowledged
    wait_for(lambda: settled(gw.db_url), timeout=120, what="every receipt indexed or quarantined")
    jobs = gw.sql("SELECT sop_instance_uid, state::text, storage_path, last_error FROM ingest_jobs")
    by_uid: dict[str, list[tuple[str, str, str | None]]] = {}
    for uid, state, path, error in jobs:
        by_uid.setdefault(uid, []).append((state, path, error))
    problems = []
    states: Counter[str] = Counter()
    for uid in acknowledged:
        rows = by_uid.get(uid, [])
        if len(rows) != 1:
            problems.append(f"{uid}: {len(rows)} ingest jobs")
            continue
        state, stored_path, error = rows[0]
        states[state] += 1
        if state not in ("done", "quarantined"):
            problems.append(f"{uid}: left {state}")
        if state == "quarantined" and not (error or "").strip():
            problems.append(f"{uid}: quarantined without a reason")
        if dataset_bytes(gw.storage / stored_path) != dataset_bytes(record.sources[uid]):
            problems.append(f"{uid}: stored bytes differ from the mutated data set sent")
    unacknowledged_recorded = set(by_uid) - acknowledged
    scp_after = _receiver_state(gw)
    report(
        "data set mutations of pydicom's test files",
        cases=len(record.sent),
        outcome=f"{len(acknowledged)} stored as received -> {dict(states)}; mutations "
        f"{dict(mutations)}",
        lost=len([p for p in problems if "jobs" in p or "differ" in p]),
        duplicated=0,
    )
    assert problems == [], "\n".join(problems[:20])
    assert not unacknowledged_recorded, (
        f"recorded but never acknowledged: {unacknowledged_recorded}"
    )
    assert gw.processes["ingest"].poll() is None and gw.processes["ingest"].pid == ingest_pid
    assert set(scp_after) == set(scp_before)
    assert len(record.sent) >= min(count, 200)


def test_dataset_mutations_are_stored_as_received_and_indexed_or_quarantined(
    fuzz_gateway: Gateway, tmp_path: Path, report: Callable[..., object]
) -> None:
    _dataset_mutations(fuzz_gateway, tmp_path, count=600, budget=60, report=report)


@pytest.mark.soak
def test_dataset_mutations_soak(
    fuzz_gateway: Gateway, tmp_path: Path, report: Callable[..., object]
) -> None:
    _dataset_mutations(fuzz_gateway, tmp_path, count=3000, budget=900, report=report)


def test_a_value_postgres_cannot_store_never_leaves_its_job_retrying_forever(
    fuzz_gateway: Gateway, tmp_path: Path, report: Callable[..., object]
) -> None:
    gw = fuzz_gateway
    [source] = ct_series(tmp_path / "ct", count=1, size=16)
    ds = pydicom.dcmread(source)
    ds.StudyDescription = "HEAD\x00NECK"  # valid to receive; PostgreSQL text cannot hold NUL
    ds.save_as(source)
    record = SteadyLoad(gw.port, [source]).run_and_finish()
    assert len(record.acknowledged) == 1
    wait_for(
        lambda: (
            gw.sql("SELECT state::text FROM ingest_jobs")[0][0] in ("done", "quarantined")
            or gw.sql("SELECT attempts FROM ingest_jobs")[0][0] > 10
        ),
        timeout=60,
        what="the job finished, or retried past any limit",
    )
    [(state, attempts, error)] = gw.sql("SELECT state::text, attempts, last_error FROM ingest_jobs")
    report("a NUL byte in a text attribute (ingest)", cases=1,
           outcome=f"ingest job {state} after {attempts} attempt(s)", lost=0, duplicated=0)  # fmt: skip
    assert state in ("done", "quarantined"), (state, attempts, error)
    assert state == "done" or (error or "").strip()


# -- association flood -----------------------------------------------------------------------


def _associate(port: int, timeout: float = 10) -> tuple[socket.socket, tuple[int, bytes] | None]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(fuzz.associate_rq())
    return sock, fuzz.first_pdu(sock, timeout)


def test_association_flood_beyond_the_maximum_is_refused_as_local_limit_exceeded(
    make_gateway: Callable[..., Gateway], report: Callable[..., object]
) -> None:
    limit = 4
    gw = make_gateway(dicom={"processes": 1, "max_associations": limit})
    gw.start_scp()
    [receiver] = receivers(gw.processes["scp"].pid)
    held = []
    try:
        for _ in range(limit):
            sock, answer = _associate(gw.port)
            assert answer is not None and answer[0] == 0x02, answer
            held.append(sock)
        flood = 40
        answers: list[tuple[int, bytes] | None] = []
        lock = threading.Lock()

        def one() -> None:
            sock, answer = _associate(gw.port)
            sock.close()
            with lock:
                answers.append(answer)

        threads = [threading.Thread(target=one) for _ in range(flood)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        kinds = Counter(
            "A-ASSOCIATE-RJ transient, local limit exceeded"
            if a and a[0] == 0x03 and a[1][1:4] == bytes([2, 3, 2])
            else f"PDU 0x{a[0]:02X} {a[1][:4].hex()}"
            if a
            else "no answer"
            for a in answers
        )
        report(
            f"association flood: {flood} beyond max_associations={limit}",
            cases=flood,
            outcome=", ".join(f"{k} x{v}" for k, v in kinds.items()),
            lost=0,
            duplicated=0,
        )
        assert kinds == {"A-ASSOCIATE-RJ transient, local limit exceeded": flood}, kinds
    finally:
        for sock in held:
            sock.close()
    # The held associations gone, the receiver (the same process) accepts again.
    wait_for(gw.echo_ok, timeout=30, what="an association accepted after the flood")
    assert receivers(gw.processes["scp"].pid) == [receiver]


# -- TLS -------------------------------------------------------------------------------------


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "gateway.crt", directory / "gateway.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=gateway", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _s_client(port: int, *options: str) -> tuple[str, str]:
    """Handshake with openssl s_client; returns (negotiated protocol or '', the output)."""
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *options],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    match = re.search(r"^New, (TLSv[\d.]+), Cipher is (\S+)", output, re.M)
    if match and match.group(2) != "(NONE)":
        return match.group(1), output
    return "", output


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# (what, s_client options): each must be refused by the gateway.
WEAK = [
    ("TLS 1.0", ["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
    ("TLS 1.1", ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
    ("TLS 1.2 CBC suite (ECDHE-RSA-AES128-SHA)", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"]),
    ("TLS 1.2 CBC-SHA384 suite", ["-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA384"]),
    ("TLS 1.2 static RSA key exchange", ["-tls1_2", "-cipher", "AES128-GCM-SHA256"]),
    ("TLS 1.2 3DES", ["-tls1_2", "-cipher", "DES-CBC3-SHA:@SECLEVEL=0"]),
    ("TLS 1.2 NULL cipher", ["-tls1_2", "-cipher", "NULL-SHA256:@SECLEVEL=0"]),
    ("TLS 1.2 anonymous DH", ["-tls1_2", "-cipher", "ADH-AES128-GCM-SHA256:@SECLEVEL=0"]),
]
STRONG = [
    ("TLS 1.2 ECDHE-RSA-AES128-GCM-SHA256", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
     "TLSv1.2"),
    ("TLS 1.3", ["-tls1_3"], "TLSv1.3"),
]  # fmt: skip


def test_tls_port_refuses_old_protocols_and_weak_ciphers(
    make_gateway: Callable[..., Gateway], tmp_path: Path, report: Callable[..., object]
) -> None:
    cert, key = _certificate(tmp_path)
    tls_port = free_port()
    gw = make_gateway(
        dicom={
            "processes": 1,
            "tls": {"enabled": True, "port": tls_port, "certificate": str(cert),
                    "private_key": str(key)},
        }
    )  # fmt: skip
    gw.start_scp()
    # A control server that accepts anything: a weak offer counts as refused by the gateway only
    # if this openssl can make it (and this control accepts it).
    control_port = free_port()
    control = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{control_port}", "-cert", str(cert),
         "-key", str(key), "-cipher", "ALL:eNULL:@SECLEVEL=0", "-quiet"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    refused: list[str] = []
    untestable: list[str] = []
    accepted: list[str] = []
    try:
        wait_for(lambda: _listening(control_port), what="the control TLS server")
        for what, options in WEAK:
            if not _s_client(control_port, *options)[0]:
                untestable.append(what)  # this openssl cannot even offer it
                continue
            protocol, output = _s_client(tls_port, *options)
            (accepted if protocol else refused).append(what)
    finally:
        control.kill()
        control.wait()
    for what, options, expected in STRONG:
        protocol, output = _s_client(tls_port, *options)
        assert protocol == expected, f"{what}: {output[-800:]}"
    report(
        "TLS: old protocols and weak ciphers (openssl s_client)",
        cases=len(WEAK) + len(STRONG),
        outcome=f"refused {len(refused)}: {', '.join(refused)}; TLS 1.2 AEAD and 1.3 accepted"
        + (f"; not offered by this openssl: {', '.join(untestable)}" if untestable else ""),
    )
    assert accepted == [], accepted
    assert {"TLS 1.0", "TLS 1.1"} <= set(refused), (refused, untestable)
    # The plain port and the receiver are unaffected by the failed handshakes.
    assert gw.echo_ok()
