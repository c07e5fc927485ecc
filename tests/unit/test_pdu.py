"""The hand-encoded File Meta Information must equal what pydicom writes for the same facts."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from dicom_gw.dicom.pdu import IMPLEMENTATION_VERSION, file_meta

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def pydicom_file_meta(sop_class: str, sop_instance: str, syntax: str, calling: str, called: str,
                      address: str) -> bytes:  # fmt: skip
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION.decode()
    if calling:
        meta.SourceApplicationEntityTitle = calling
        meta.SendingApplicationEntityTitle = calling
    if called:
        meta.ReceivingApplicationEntityTitle = called
    if address:
        host = f"[{address}]" if ":" in address else address
        meta.SendingPresentationAddress = f"dicom://{host}"
    buffer = io.BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("sop_instance", "syntax", "calling", "called", "address"),
    [
        ("1.2.3.4", EXPLICIT_LE, "MODALITY", "DICOM_GW", "127.0.0.1"),
        ("1.2.3.45", "1.2.840.10008.1.2", "CT1", "GW", "10.0.0.12"),  # odd lengths everywhere
        ("1.2.826.0.1.3680043.8.498.1", EXPLICIT_LE, "A" * 16, "B" * 15, "fe80::1"),
        ("1.2.3", EXPLICIT_LE, "", "", ""),  # no association facts: optional elements absent
    ],
)
def test_file_meta_equals_pydicom(tmp_path, sop_instance, syntax, calling, called, address):
    ours = file_meta(CT_IMAGE, sop_instance, syntax, calling, called, address)
    assert ours == pydicom_file_meta(CT_IMAGE, sop_instance, syntax, calling, called, address)
    path = tmp_path / "meta.dcm"
    path.write_bytes(ours)
    meta = read_file_meta_info(path)
    assert meta.MediaStorageSOPInstanceUID == sop_instance
    assert meta.TransferSyntaxUID == syntax
