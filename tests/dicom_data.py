"""DICOM test data: pydicom's bundled test files and generated, seeded series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def pydicom_test_files() -> list[Path]:
    """The Part 10 files pydicom ships (no network fetch), that carry the UIDs a store needs."""
    files = []
    for path in sorted(TEST_FILES.rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        meta = getattr(ds, "file_meta", None)
        if not meta or "TransferSyntaxUID" not in meta or "MediaStorageSOPClassUID" not in meta:
            continue
        if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
            continue
        if "DirectoryRecordSequence" in ds:  # DICOMDIR is media, not a storage object
            continue
        files.append(path)
    return files


def ct_series(
    directory: Path,
    count: int,
    size: int = 512,
    seed: int = 1,
    patient_name: str = "Test^Patient",
    frames: int = 1,
    modality: str = "CT",
    study_uid: str | None = None,
) -> list[Path]:
    """A CT (or MR) series of `count` instances, `size` x `size` 16-bit, with a file meta."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid, series_uid = study_uid or generate_uid(), generate_uid()
    sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    files = []
    for number in range(1, count + 1):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = patient_name
        ds.PatientID = f"PID{seed:05d}"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyDate = "20261128"
        ds.StudyTime = "120000"
        ds.AccessionNumber = f"ACC{seed:05d}"
        ds.StudyDescription = f"Generated {modality}"
        ds.Modality = modality
        ds.SeriesNumber = 1
        ds.InstanceNumber = number
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        if frames > 1:
            ds.NumberOfFrames = frames
        pixels = rng.integers(-1000, 3000, size=(frames, size, size), dtype=np.int16)
        ds.PixelData = pixels.tobytes()
        path = directory / f"{modality.lower()}{number:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files
