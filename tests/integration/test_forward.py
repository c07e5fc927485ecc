"""Routing and forwarding end to end: storescu -> gateway -> real DICOM sinks, through outages."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest

from tests.conftest import Gateway, free_port
from tests.dicom_data import ct_series
from tests.sinks import RecordingSCP, StoreSCP
from tests.support import dataset_bytes, storescu, wait_for


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[Callable[[str], StoreSCP]]:
    started: list[StoreSCP] = []

    def make(ae_title: str, port: int | None = None, start: bool = True) -> StoreSCP:
        sink = StoreSCP(ae_title, port or free_port(), tmp_path / f"sink-{ae_title}")
        started.append(sink)
        return sink.start() if start else sink

    yield make  # type: ignore[misc]
    for sink in started:
        sink.stop()


@pytest.fixture
def recording_sinks() -> Iterator[list[RecordingSCP]]:
    created: list[RecordingSCP] = []
    yield created
    for sink in created:
        sink.stop()


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture
def forwarding(make_gateway: Callable[..., Gateway]) -> Gateway:
    gw = make_gateway()
    gw.start_scp()
    gw.start_ingest()
    gw.start_forward()
    gw.start("dbpool", "worker", "dbpool")
    return gw


def test_each_sink_gets_exactly_what_its_rules_chose(
    forwarding: Gateway, sinks: Callable[..., StoreSCP], tmp_path: Path
) -> None:
    gw = forwarding
    ct_sink, mr_sink = sinks("CT_SINK"), sinks("MR_SINK")
    gw.add_destination("ct-archive", "CT_SINK", ct_sink.port)
    gw.add_destination("mr-archive", "MR_SINK", mr_sink.port)
    gw.add_rule("ct", "--when", "modality:equals:CT", "--to", "ct-archive")
    gw.add_rule("mr", "--when", "Modality:equals:MR", "--to", "mr-archive")
    ct = ct_series(tmp_path / "ct", count=6, size=64, modality="CT")
    mr = ct_series(tmp_path / "mr", count=4, size=64, modality="MR", seed=2)
    assert storescu(gw.port, *ct, *mr).returncode == 0

    wait_for(
        lambda: len(ct_sink.received()) == 6 and len(mr_sink.received()) == 4,
        timeout=60,
        what="both sinks to receive their instances",
    )
    assert set(ct_sink.received()) == {uid_of(p) for p in ct}
    assert set(mr_sink.received()) == {uid_of(p) for p in mr}
    sources = {uid_of(p): p for p in ct + mr}
    for sink in (ct_sink, mr_sink):
        for uid, received in sink.received().items():
            assert dataset_bytes(received) == dataset_bytes(sources[uid]), uid
    wait_for(lambda: gw.delivery_states() == {"sent": 10}, what="deliveries recorded as sent")

    # The DB pool worker loads ingest events and forward metrics in batches.
    wait_for(
        lambda: gw.sql("SELECT count(*) FROM ingest_events WHERE kind = 'indexed'")[0][0] == 10,
        what="ingest events loaded by dbpool",
    )
    wait_for(
        lambda: (
            gw.sql("SELECT count(*) FROM operation_metrics WHERE operation = 'forward'")[0][0] == 10
        ),
        what="forward metrics loaded by dbpool",
    )
    [(segments,)] = gw.sql("SELECT count(*) FROM spool_segments")
    assert 0 < segments < 20  # batched: far fewer transactions than rows


def test_a_sink_that_comes_back_gets_everything_and_a_dead_one_is_dead_lettered(
    forwarding: Gateway, sinks: Callable[..., StoreSCP], tmp_path: Path
) -> None:
    gw = forwarding
    healthy = sinks("HEALTHY")
    late = sinks("LATE", start=False)
    gone_port = free_port()
    backoff = ("--backoff-base-seconds", "0.2", "--backoff-cap-seconds", "1")
    gw.add_destination("healthy", "HEALTHY", healthy.port, *backoff)
    gw.add_destination("late", "LATE", late.port, "--max-retries", "50", *backoff)
    gw.add_destination("gone", "GONE", gone_port, "--max-retries", "2", *backoff)
    gw.add_rule("everything", "--to", "healthy", "--to", "late", "--to", "gone")
    files = ct_series(tmp_path / "ct", count=5, size=32)
    assert storescu(gw.port, *files).returncode == 0

    # The late sink is down: its deliveries fail and wait, with the reason recorded.
    wait_for(
        lambda: (
            gw.sql(
                "SELECT count(*) FROM deliveries d JOIN destinations t ON t.id = d.destination_id"
                " WHERE t.name = 'late' AND d.attempts >= 2"
            )[0][0]
            == 5
        ),
        timeout=60,
        what="repeated failed attempts to the late sink",
    )
    reasons = gw.sql(
        "SELECT DISTINCT e.reason FROM delivery_events e JOIN deliveries d"
        " ON d.id = e.delivery_id JOIN destinations t ON t.id = d.destination_id"
        " WHERE t.name = 'late' AND e.to_state = 'retry'"
    )
    assert reasons and all("connection refused" in r for (r,) in reasons)
    # Meanwhile the healthy sink has everything: a dead destination never stalls the others.
    wait_for(lambda: len(healthy.received()) == 5, what="the healthy sink")

    late.start()
    wait_for(lambda: len(late.received()) == 5, timeout=60, what="the late sink to catch up")
    assert set(late.received()) == {uid_of(p) for p in files}

    # The sink that never comes back: dead letters after max retries, each with its reason.
    wait_for(
        lambda: (
            gw.sql(
                "SELECT count(*) FROM deliveries d JOIN destinations t ON t.id = d.destination_id"
                " WHERE t.name = 'gone' AND d.state = 'dead'"
            )[0][0]
            == 5
        ),
        timeout=60,
        what="dead letters for the gone sink",
    )
    rows = gw.sql(
        "SELECT d.attempts, d.last_error FROM deliveries d JOIN destinations t"
        " ON t.id = d.destination_id WHERE t.name = 'gone'"
    )
    assert all(attempts == 3 and "connection refused" in error for attempts, error in rows)

    # An operator retries the dead letters once the destination is back.
    gone = sinks("GONE", port=gone_port)
    result = gw.cli("queue", "retry", "--destination", "gone")
    assert result.returncode == 0 and "5 deliveries" in result.stderr
    wait_for(lambda: len(gone.received()) == 5, timeout=60, what="retried dead letters")
    history = gw.cli(
        "queue",
        "history",
        str(
            gw.sql(
                "SELECT min(d.id) FROM deliveries d JOIN destinations t ON t.id = d.destination_id"
                " WHERE t.name = 'gone'"
            )[0][0]
        ),
    )
    assert "-> dead" in history.stderr and "retried by" in history.stderr


def test_failure_statuses_only_affect_the_instances_refused(
    forwarding: Gateway, recording_sinks: list[RecordingSCP], tmp_path: Path
) -> None:
    gw = forwarding
    files = ct_series(tmp_path / "ct", count=6, size=32)
    refused = {uid_of(files[1]), uid_of(files[4])}
    sink = RecordingSCP(
        "PICKY", free_port(), fail=lambda ds: 0xA700 if str(ds.SOPInstanceUID) in refused else None
    )
    recording_sinks.append(sink.start())
    gw.add_destination(
        "picky",
        "PICKY",
        sink.port,
        "--max-retries",
        "1",
        "--backoff-base-seconds",
        "0.1",
        "--backoff-cap-seconds",
        "0.5",
    )
    gw.add_rule("all", "--to", "picky")
    assert storescu(gw.port, *files).returncode == 0
    wait_for(
        lambda: gw.delivery_states() == {"sent": 4, "dead": 2},
        timeout=60,
        what="4 sent and 2 dead-lettered",
    )
    assert sink.uids() == {uid_of(p) for p in files} - refused
    dead = gw.sql(
        "SELECT i.sop_instance_uid, d.last_status, d.attempts FROM deliveries d"
        " JOIN instances i ON i.id = d.instance_id WHERE d.state = 'dead'"
    )
    assert {uid for uid, _, _ in dead} == refused
    assert all(status == 0xA700 and attempts == 2 for _, status, attempts in dead)


def test_killing_the_forward_worker_mid_batch_loses_nothing(
    make_gateway: Callable[..., Gateway], recording_sinks: list[RecordingSCP], tmp_path: Path
) -> None:
    gw = make_gateway()
    gw.start_scp()
    gw.start_ingest()
    # A destination that takes ~20 ms per instance: the worker is surely mid-batch when killed.
    sink = RecordingSCP("SLOW", free_port(), fail=lambda ds: time.sleep(0.02))  # type: ignore[func-returns-value]
    recording_sinks.append(sink.start())
    gw.add_destination("slow", "SLOW", sink.port, "--batch-size", "40")
    gw.add_rule("all", "--to", "slow")
    files = ct_series(tmp_path / "ct", count=120, size=32)
    assert storescu(gw.port, *files).returncode == 0
    gw.wait_indexed(120)

    worker = gw.start_forward("forward-a")
    wait_for(lambda: len(sink.uids()) >= 10, timeout=60, what="forwarding under way")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    gw.processes.pop("forward-a")
    assert len(sink.uids()) < 120

    gw.start_forward("forward-b")
    wait_for(lambda: len(sink.uids()) == 120, timeout=120, what="every instance at the sink")
    assert sink.uids() == {uid_of(p) for p in files}
    wait_for(lambda: gw.delivery_states() == {"sent": 120}, timeout=60, what="all marked sent")


def test_study_mode_holds_until_quiet_then_sends_in_one_association(
    forwarding: Gateway, recording_sinks: list[RecordingSCP], tmp_path: Path
) -> None:
    gw = forwarding
    sink = RecordingSCP("STUDY_SINK", free_port())
    recording_sinks.append(sink.start())
    gw.add_destination(
        "per-study", "STUDY_SINK", sink.port, "--mode", "study", "--study-quiet-seconds", "3"
    )
    gw.add_rule("all", "--to", "per-study")
    files = ct_series(tmp_path / "ct", count=4, size=32)
    for path in files:  # four separate associations, as a modality sending slice by slice
        assert storescu(gw.port, path).returncode == 0
    gw.wait_indexed(4)
    assert gw.delivery_states() == {"held": 4}
    assert sink.received == []
    wait_for(lambda: len(sink.received) == 4, timeout=30, what="the study released")
    assert len({assoc for assoc, _ in sink.received}) == 1


def test_cleanup_deletes_only_files_whose_deliveries_all_succeeded(
    forwarding: Gateway, sinks: Callable[..., StoreSCP], tmp_path: Path
) -> None:
    gw = forwarding
    sink = sinks("SINK")
    gw.add_destination("sink", "SINK", sink.port)
    gw.add_destination("paused", "PAUSED", free_port(), "--disabled")
    gw.add_rule("ct-to-sink", "--when", "StudyDescription:glob:*CT*", "--to", "sink")
    gw.add_rule("mr-to-both", "--when", "modality:equals:MR", "--to", "sink", "--to", "paused")
    ct = ct_series(tmp_path / "ct", count=3, size=16)
    mr = ct_series(tmp_path / "mr", count=2, size=16, modality="MR", seed=3)
    assert storescu(gw.port, *ct, *mr).returncode == 0
    wait_for(lambda: len(sink.received()) == 5, what="the sink")
    wait_for(lambda: gw.delivery_states() == {"sent": 5, "pending": 2}, what="delivery states")

    gw.options["cleanup"] = {"retention_hours": 0}
    gw.write_config()
    result = gw.cli("worker", "cleanup", "--once")
    assert result.returncode == 0, result.stderr
    rows = gw.sql(
        "SELECT i.storage_path, i.deleted_at IS NOT NULL, se.modality FROM instances i"
        " JOIN series se ON se.id = i.series_id"
    )
    for path, deleted, modality in rows:
        assert (gw.storage / path).exists() == (not deleted)
        # MR still has a pending delivery to the paused destination: its files must stay.
        assert deleted == (modality == "CT")


def test_destination_and_rule_commands_refuse_bad_input_naming_the_field(
    forwarding: Gateway, sinks: Callable[..., StoreSCP]
) -> None:
    gw = forwarding
    bad = gw.cli(
        "destination",
        "add",
        "x",
        "--ae-title",
        "WAY_TOO_LONG_AE_TITLE",
        "--host",
        "127.0.0.1",
        "--port",
        "70000",
    )
    assert bad.returncode == 2
    assert "ae_title" in bad.stderr and "port" in bad.stderr
    sink = sinks("ECHO_ME")
    gw.add_destination("echo-me", "ECHO_ME", sink.port)
    duplicate = gw.cli(
        "destination", "add", "echo-me", "--ae-title", "A", "--host", "h", "--port", "1"
    )
    assert duplicate.returncode == 2 and "name" in duplicate.stderr

    ok = gw.cli("destination", "echo", "echo-me")
    assert ok.returncode == 0 and "success" in ok.stderr
    gw.add_destination("nobody", "NOBODY", free_port())
    down = gw.cli("destination", "echo", "nobody")
    assert down.returncode == 1 and "connection refused" in down.stderr

    for condition, field in [
        ("NotAKeyword:equals:x", "conditions.0.field"),
        ("modality:regex:([", "conditions.0"),
        ("modality:equals", "conditions.0"),
        ("calling_ae:present", "conditions.0"),
    ]:
        result = gw.cli("rule", "add", "bad", "--when", condition, "--to", "echo-me")
        assert result.returncode == 2, condition
        assert field in result.stderr, (condition, result.stderr)
    unknown = gw.cli("rule", "add", "bad", "--to", "echo-me", "--to", "missing")
    assert unknown.returncode == 2 and "destinations.1" in unknown.stderr
    listing = gw.cli("destination", "list")
    assert "echo-me" in listing.stdout


def test_a_destination_refusing_the_stored_transfer_syntax_is_a_failure_with_that_reason(
    forwarding: Gateway, recording_sinks: list[RecordingSCP], tmp_path: Path
) -> None:
    from pydicom.uid import RLELossless

    gw = forwarding
    sink = RecordingSCP("PLAIN_ONLY", free_port())  # accepts only uncompressed syntaxes
    recording_sinks.append(sink.start())
    gw.add_destination("plain", "PLAIN_ONLY", sink.port, "--max-retries", "0")
    gw.add_rule("all", "--to", "plain")
    [plain] = ct_series(tmp_path / "ct", count=1, size=32)
    ds = pydicom.dcmread(plain)
    # RLE: the gateway must not transcode it to please the destination.
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    rle = tmp_path / "rle.dcm"
    ds.save_as(rle, enforce_file_format=True)
    assert storescu(gw.port, rle, propose="-xr").returncode == 0
    wait_for(lambda: gw.delivery_states() == {"dead": 1}, timeout=60, what="the refusal")
    [(error,)] = gw.sql("SELECT last_error FROM deliveries")
    assert "transfer syntax not accepted" in error and str(RLELossless) in error
    assert sink.uids() == set()
