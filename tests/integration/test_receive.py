"""The receive path against real dcmtk peers, a real pynetdicom sender and a real PostgreSQL."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, _config
from pynetdicom.sop_class import _STORAGE_CLASSES as STORAGE_CLASSES

from tests.conftest import Gateway, free_port
from tests.dicom_data import ct_series, pydicom_test_files
from tests.support import dataset_bytes, dicom_env, storescu, wait_for


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """dcmtk's storescp in bit-preserving mode: the reference for what a sender puts on the wire."""
    out = tmp_path / "storescp"
    out.mkdir()
    port = free_port()
    process = subprocess.Popen(
        ["storescp", "-aet", "REFERENCE", "+B", "-od", str(out), str(port)],
        env=dicom_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(
        lambda: (
            subprocess.run(
                ["echoscu", "-aec", "REFERENCE", "127.0.0.1", str(port)],
                env=dicom_env(),
                capture_output=True,
            ).returncode
            == 0
        ),
        what="storescp",
    )
    yield port, out
    process.terminate()
    process.wait()


def stored_files(gateway: Gateway) -> dict[str, Path]:
    """SOP Instance UID -> stored file, for the latest version of each instance."""
    rows = gateway.sql("SELECT sop_instance_uid, storage_path FROM instances WHERE is_latest")
    return {uid: gateway.storage / path for uid, path in rows}


def test_every_pydicom_test_file_is_stored_as_sent_by_storescu(
    gateway: Gateway, storescp: tuple[int, Path]
) -> None:
    ref_port, ref_dir = storescp
    files = pydicom_test_files()
    assert len(files) > 40
    compared = 0
    for source in files:
        ref = storescu(ref_port, source, called="REFERENCE")
        gw = storescu(gateway.port, source)
        # The gateway accepts exactly what dcmtk's own receiver accepts from the same sender.
        assert (gw.returncode == 0) == (ref.returncode == 0), (source.name, gw.stderr)
        if gw.returncode != 0:
            continue
        # The job is committed before success is answered, so the newest one is this file.
        [(path,)] = gateway.sql("SELECT storage_path FROM ingest_jobs ORDER BY id DESC LIMIT 1")
        [reference] = list(ref_dir.iterdir())
        # The data set bytes we kept are exactly the bytes storescp received on the wire.
        assert dataset_bytes(gateway.storage / path) == dataset_bytes(reference), source.name
        reference.unlink()
        compared += 1
    assert compared > 30

    gateway.wait_indexed(compared)
    rows = gateway.sql("SELECT storage_path, sha256, size_bytes FROM instances")
    assert (
        len(rows) + len(gateway.sql("SELECT 1 FROM ingest_jobs WHERE state = 'quarantined'"))
        == compared
    )
    for path, sha256, size in rows:
        data = (gateway.storage / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256
        assert len(data) == size
        assert data[128:132] == b"DICM"


def _raw_send(port: int, files: list[Path]) -> dict[Path, int]:
    """Send files with pynetdicom straight from disk: the data set bytes go out undecoded."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="TESTSCU")
    syntaxes = [str(uid) for uid in AllTransferSyntaxes]
    classes = sorted({str(pydicom.dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files})
    for uid in classes:
        for ts in syntaxes[:20]:
            if len(ae.requested_contexts) < 128:
                ae.add_requested_context(uid, ts)
    statuses: dict[Path, int] = {}
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOM_GW")
    assert assoc.is_established
    for path in files:
        status = assoc.send_c_store(path)
        statuses[path] = int(status.Status) if "Status" in status else -1
    assoc.release()
    return statuses


def test_raw_data_set_bytes_equal_the_source_files(gateway: Gateway) -> None:
    candidates = []
    for path in pydicom_test_files():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ts = str(ds.file_meta.TransferSyntaxUID)
        if str(ds.SOPClassUID) in STORAGE_CLASSES.values() and ts in [
            str(u) for u in AllTransferSyntaxes[:20]
        ]:
            candidates.append(path)
    # Group by SOP class so each association stays within 128 presentation contexts.
    by_class: dict[str, list[Path]] = {}
    for path in candidates:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID)
        by_class.setdefault(uid, []).append(path)
    sent: list[Path] = []
    for paths in by_class.values():
        for path, status in _raw_send(gateway.port, paths).items():
            if status == 0:
                sent.append(path)
    assert len(sent) >= 30
    gateway.wait_indexed(len(sent))
    rows = gateway.sql("SELECT storage_path FROM ingest_jobs")
    stored_payloads = {dataset_bytes(gateway.storage / p) for (p,) in rows}
    for source in sent:
        assert dataset_bytes(source) in stored_payloads, source.name


def test_generated_ct_series_is_stored_and_indexed(gateway: Gateway, tmp_path: Path) -> None:
    files = ct_series(tmp_path / "ct", count=25, size=128)
    result = storescu(gateway.port, *files)
    assert result.returncode == 0, result.stderr
    gateway.wait_indexed(25)
    study_uid = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    [(count, modalities)] = gateway.sql(
        "SELECT instance_count, modalities FROM studies WHERE study_instance_uid = %s", (study_uid,)
    )
    assert count == 25
    assert modalities == ["CT"]
    stored = stored_files(gateway)
    for source in files:
        uid = str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)
        assert dataset_bytes(stored[uid]) == dataset_bytes(source)
    [(calling, called, peer)] = gateway.sql(
        "SELECT DISTINCT calling_ae, called_ae, host(peer_address) FROM instances"
    )
    assert (calling, called, peer) == ("STORESCU", "DICOM_GW", "127.0.0.1")


def test_resent_instance_is_a_new_version_and_nothing_is_overwritten(
    gateway: Gateway, tmp_path: Path
) -> None:
    [source] = ct_series(tmp_path / "ct", count=1, size=32)
    assert storescu(gateway.port, source).returncode == 0
    assert storescu(gateway.port, source).returncode == 0
    gateway.wait_indexed(2)
    rows = gateway.sql("SELECT storage_path, is_latest FROM instances ORDER BY id")
    assert len(rows) == 2
    assert [latest for _, latest in rows] == [False, True]
    for path, _ in rows:
        assert (gateway.storage / path).exists()
    [(count,)] = gateway.sql("SELECT instance_count FROM studies")
    assert count == 1


def test_phi_is_encrypted_at_rest(gateway: Gateway, tmp_path: Path) -> None:
    [source] = ct_series(tmp_path / "ct", count=1, size=32, patient_name="Doe^Jane")
    assert storescu(gateway.port, source).returncode == 0
    gateway.wait_indexed(1)
    [(name_enc,)] = gateway.sql("SELECT patient_name_enc FROM patients")
    assert b"Doe" not in bytes(name_enc)
    key = (gateway.root / "secrets" / "phi.key").read_text().strip()
    [(name,)] = gateway.sql("SELECT pgp_sym_decrypt(patient_name_enc, %s) FROM patients", (key,))
    assert name == "Doe^Jane"


def test_the_file_meta_records_who_sent_it_to_whom_from_where(
    gateway: Gateway, tmp_path: Path
) -> None:
    [source] = ct_series(tmp_path / "ct", count=1, size=16)
    assert storescu(gateway.port, source).returncode == 0
    [(path,)] = gateway.sql("SELECT storage_path FROM ingest_jobs")
    meta = pydicom.filereader.read_file_meta_info(gateway.storage / path)
    assert meta.SendingApplicationEntityTitle == "STORESCU"
    assert meta.ReceivingApplicationEntityTitle == "DICOM_GW"
    assert meta.SendingPresentationAddress == "dicom://127.0.0.1"
    # What recovery reads back if the record were lost.
    from dicom_gw.dicom.storage import Storage
    from dicom_gw.recovery import _describe

    described = _describe(Storage(gateway.storage), path)
    assert (described.calling_ae, described.called_ae, described.peer_address) == (
        "STORESCU",
        "DICOM_GW",
        "127.0.0.1",
    )
