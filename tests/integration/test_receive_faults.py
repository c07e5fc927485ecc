"""AE policy, bad input, crashes and recovery on the receive path: nothing acknowledged is lost,
nothing unacknowledged is indexed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from sqlalchemy.engine import make_url

from tests.conftest import Gateway
from tests.dicom_data import ct_series
from tests.support import CuttingProxy, dicom_env, storescu, wait_for


def echoscu(gateway: Gateway, calling: str, called: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["echoscu", "-v", "-aet", calling, "-aec", called, "127.0.0.1", str(gateway.port)],
        env=dicom_env(),
        capture_output=True,
        text=True,
        check=False,
    )


def scp_log(gateway: Gateway) -> str:
    return gateway.log("scp")


def test_echo_succeeds_for_an_allowed_caller(gateway: Gateway) -> None:
    result = echoscu(gateway, "ECHOSCU", "DICOM_GW")
    assert result.returncode == 0, result.stderr


def test_unknown_calling_ae_is_rejected_permanently(gateway: Gateway) -> None:
    result = echoscu(gateway, "INTRUDER", "DICOM_GW")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Rejected Permanent" in output
    assert "Calling AE Title Not Recognized" in output
    wait_for(lambda: "calling AE title not allowed" in scp_log(gateway), what="the rejection log")


def test_wrong_called_ae_is_rejected_permanently(gateway: Gateway) -> None:
    result = echoscu(gateway, "ECHOSCU", "SOMEONE_ELSE")
    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.stdout + result.stderr


def test_caller_restricted_to_a_network_is_refused_elsewhere(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway(
        dicom={
            "allowed_callers": [
                {"ae_title": "ECHOSCU", "networks": ["10.9.9.0/24"]},
                {"ae_title": "LOCAL", "networks": ["127.0.0.0/8"]},
            ]
        }
    )
    gw.start("scp", "scp")
    wait_for(lambda: gw.echo_ok(calling="LOCAL"), what="the SCP")
    assert echoscu(gw, "ECHOSCU", "DICOM_GW").returncode != 0


def test_associations_are_refused_above_the_disk_watermark(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = make_gateway(storage={"disk_watermark_percent": 0.001})
    gw.start("scp", "scp")
    wait_for(lambda: "receiver listening" in gw.log("scp"), what="the SCP")
    result = echoscu(gw, "ECHOSCU", "DICOM_GW")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Rejected Transient" in output
    [source] = ct_series(tmp_path / "ct", count=1, size=16)
    assert storescu(gw.port, source).returncode != 0
    assert gw.sql("SELECT count(*) FROM ingest_jobs") == [(0,)]


def test_failure_is_answered_when_the_record_cannot_be_committed(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = make_gateway()
    # Point the SCP at a database that does not exist: files can be written, never recorded.
    missing = make_url(gw.db_url).set(database="no_such_db")
    gw.options["database"] = {"url": missing.render_as_string()}
    gw.write_config()
    gw.start("scp", "scp")
    wait_for(lambda: gw.echo_ok(), what="the SCP")
    [source] = ct_series(tmp_path / "ct", count=1, size=16)
    result = storescu(gw.port, source, extra=("-v",))
    assert result.returncode != 0
    assert "Refused: OutOfResources" in result.stderr, result.stderr
    # Nothing unacknowledged stays behind to be recovered and indexed later.
    assert not list((gw.storage / "incoming").rglob("*.dcm"))


def _send_raw(port: int, payload: bytes, read_reply: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        if read_reply:
            try:
                return sock.recv(65536)
            except (TimeoutError, ConnectionError):
                return b""
    return b""


def test_garbage_and_truncated_pdus_do_not_stop_the_scp(gateway: Gateway) -> None:
    rng = __import__("random").Random(7)
    garbage = bytes(rng.getrandbits(8) for _ in range(4096))
    _send_raw(gateway.port, garbage)
    # An A-ASSOCIATE-RQ header announcing 1000 bytes, then the connection closes after 10.
    _send_raw(gateway.port, b"\x01\x00" + (1000).to_bytes(4, "big") + b"\x00\x01" + b"\x00" * 8)
    # A PDU type that does not exist gets an A-ABORT (or a close), never a crash.
    _send_raw(gateway.port, b"\x99\x00\x00\x00\x00\x04abcd", read_reply=True)
    assert gateway.echo_ok()
    assert gateway.sql("SELECT count(*) FROM ingest_jobs") == [(0,)]


def test_a_data_set_cut_mid_stream_is_never_indexed(gateway: Gateway, tmp_path: Path) -> None:
    [large] = ct_series(tmp_path / "big", count=1, size=512, frames=20)  # ~10 MB
    proxy = CuttingProxy(gateway.port, cut_after=3 << 20)  # the sender vanishes after 3 MB
    result = storescu(proxy.port, large)
    assert result.returncode != 0
    assert proxy.cut.wait(30) and proxy.forwarded == 3 << 20
    # The association is gone mid-data set: the SCP serves the next one, indexes nothing.
    [small] = ct_series(tmp_path / "small", count=1, size=16, seed=2)
    assert storescu(gateway.port, small).returncode == 0
    gateway.wait_indexed(1)
    [(count,)] = gateway.sql("SELECT count(*) FROM ingest_jobs")
    assert count == 1
    assert len(list((gateway.storage / "incoming").rglob("*.dcm"))) == 1


def _send_dataset(port: int, ds: Dataset) -> int:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_GW")
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    return int(status.Status)


def test_an_unindexable_file_is_quarantined_with_its_reason(gateway: Gateway) -> None:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "No^Study"
    ds.Modality = "CT"  # no Study/Series Instance UID: valid to receive, impossible to index
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert _send_dataset(gateway.port, ds) == 0
    wait_for(
        lambda: gateway.sql("SELECT state FROM ingest_jobs") == [("quarantined",)],
        what="quarantine",
    )
    [(path, reason)] = gateway.sql("SELECT storage_path, last_error FROM ingest_jobs")
    assert path.startswith("quarantine/")
    assert (gateway.storage / path).exists()
    assert "study_instance_uid" in reason
    assert gateway.sql("SELECT count(*) FROM instances") == [(0,)]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_killed_ingest_worker_jobs_are_finished_by_another_after_the_lease(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = make_gateway(ingest={"batch_size": 500, "lease_seconds": 2})
    gw.start_scp()
    files = ct_series(tmp_path / "ct", count=300, size=16)
    assert storescu(gw.port, *files).returncode == 0
    worker = gw.start_ingest("ingest-a")
    wait_for(
        lambda: gw.sql("SELECT count(*) FROM ingest_jobs WHERE state = 'claimed'")[0][0] > 0,
        what="jobs claimed by worker A",
    )
    os.kill(worker.pid, signal.SIGSTOP)  # freeze it holding its claim, then kill it there
    [(held,)] = gw.sql("SELECT count(*) FROM ingest_jobs WHERE state = 'claimed'")
    assert held > 0
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    gw.processes.pop("ingest-a")

    gw.start_ingest("ingest-b")
    gw.wait_indexed(300)
    # Every instance indexed exactly once, whatever worker A had done before it died.
    assert gw.sql("SELECT count(*), count(DISTINCT sop_instance_uid) FROM instances") == [
        (300, 300)
    ]
    assert gw.sql("SELECT max(attempts) FROM ingest_jobs WHERE state = 'done'")[0][0] <= 2


def test_a_durable_file_without_a_record_is_recovered_at_start(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gw = make_gateway()
    [source] = ct_series(tmp_path / "ct", count=1, size=16)
    orphan = gw.storage / "incoming" / "20261128" / "09" / "orphan.dcm"
    orphan.parent.mkdir(parents=True)
    shutil.copy(source, orphan)
    partial = gw.storage / "tmp" / socket.gethostname() / "rx-partial.dcm"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\x00" * 500)
    gw.start_scp()
    [(path, source_kind)] = gw.sql("SELECT storage_path, source FROM ingest_jobs")
    assert gw.sql("SELECT calling_ae FROM ingest_jobs") == [(None,)]  # a foreign file: unknown
    assert (path, source_kind) == ("incoming/20261128/09/orphan.dcm", "recovery")
    assert not partial.exists()  # never acknowledged, so swept
    gw.start_ingest()
    gw.wait_indexed(1)
    assert gw.sql("SELECT storage_path FROM instances") == [("incoming/20261128/09/orphan.dcm",)]


@pytest.mark.slow
def test_a_one_gigabyte_object_streams_to_disk_with_bounded_memory(
    gateway: Gateway, tmp_path: Path
) -> None:
    [huge] = ct_series(tmp_path / "huge", count=1, size=512, frames=2048)
    assert huge.stat().st_size > 1 << 30
    result = storescu(gateway.port, huge)
    assert result.returncode == 0, result.stderr
    scp_pid = gateway.processes["scp"].pid
    peaks = []
    for pid in _children(scp_pid):
        status = Path(f"/proc/{pid}/status").read_text()
        peaks.append(
            int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
        )
    assert peaks
    assert max(peaks) < 300 * 1024, f"receiver peak RSS {max(peaks) // 1024} MB"
    gateway.wait_indexed(1, timeout=120)
    [(size,)] = gateway.sql("SELECT size_bytes FROM instances")
    assert size >= huge.stat().st_size - 1024


def test_a_receipt_whose_record_was_lost_is_reconciled_while_running(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    # The SCP commits records asynchronously: a PostgreSQL crash can lose the last few while the
    # files are durable. Reconciliation finds such files without a restart.
    gw = make_gateway(ingest={"reconcile_interval_seconds": 1, "recovery_grace_seconds": 0})
    gw.start_scp()
    gw.start_ingest()
    [source] = ct_series(tmp_path / "ct", count=1, size=16)
    orphan = gw.storage / "incoming" / "20261128" / "10" / "lost-record.dcm"
    orphan.parent.mkdir(parents=True)
    shutil.copy(source, orphan)
    gw.wait_indexed(1, timeout=30)
    assert gw.sql("SELECT storage_path, source FROM ingest_jobs") == [
        ("incoming/20261128/10/lost-record.dcm", "recovery")
    ]
