"""Seeded benchmark data: CT, MR, large single frames, one huge multi-frame object, RLE CT.

Every data set is written once into ``<data-dir>/v<DATA_VERSION>/<key>/`` (default data dir
``var/bench-data``) and reused: the key names the data set and its size, so quick and full sizes
live side by side, and bumping ``DATA_VERSION`` regenerates everything. A data set is generated
into ``<key>.partial`` and renamed when complete, so an interrupted run never leaves a half set
that looks finished.

The pixel data are a smooth phantom (an ellipse of soft tissue in air with a "bone" ring) plus
seeded noise, so RLE compresses them about as much as it compresses real CT, and every instance
has unique UIDs derived from the seed (the same on every machine).

    python -m tests.perf.datagen [--quick] [--data-dir DIR] [--only ct,mr,...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

DATA_VERSION = 2  # 2: RLE instances keep their seeded UIDs
SEED = 20261128
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT / "var" / "bench-data"

CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.4")
DX_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
MF_GRAYSCALE_WORD_SC = UID("1.2.840.10008.5.1.4.1.1.7.3")
EXPLICIT_LE = UID("1.2.840.10008.1.2.1")
RLE_LOSSLESS = UID("1.2.840.10008.1.2.5")


@dataclass(frozen=True)
class DataSpec:
    """One generated data set: `count` instances of `rows` x `columns` x `frames`, 16-bit."""

    name: str  # ct, mr, large, huge, rle
    count: int
    rows: int
    columns: int
    frames: int = 1
    series: int = 1  # instances are spread over this many series of one study

    @property
    def key(self) -> str:
        frames = f"x{self.frames}f" if self.frames > 1 else ""
        return f"{self.name}-{self.count}x{self.rows}x{self.columns}{frames}"

    @property
    def pixel_bytes(self) -> int:
        return self.count * self.rows * self.columns * self.frames * 2


# The sizes. The huge object is 2048 frames of 512x512x16 bit: exactly 1 GiB of pixels.
FULL: dict[str, DataSpec] = {
    "ct": DataSpec("ct", 500, 512, 512),
    "mr": DataSpec("mr", 2000, 256, 256, series=4),
    "large": DataSpec("large", 10, 3872, 3872),  # 29.98 MB each
    "huge": DataSpec("huge", 1, 512, 512, frames=2048),
    "rle": DataSpec("rle", 250, 512, 512),
}
# Small counts for a smoke test that finishes in a minute or two.
QUICK: dict[str, DataSpec] = {
    "ct": DataSpec("ct", 60, 512, 512),
    "mr": DataSpec("mr", 200, 256, 256, series=2),
    "large": DataSpec("large", 2, 3872, 3872),
    "huge": DataSpec("huge", 1, 512, 512, frames=256),  # 128 MiB
    "rle": DataSpec("rle", 30, 512, 512),
}


def specs(quick: bool) -> dict[str, DataSpec]:
    return QUICK if quick else FULL


@dataclass
class DataSet:
    spec: DataSpec
    directory: Path
    files: list[Path]
    total_bytes: int

    @property
    def count(self) -> int:
        return len(self.files)


# --------------------------------------------------------------------------------------------
# Generation


def _uid(*parts: object) -> UID:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(SEED), f"v{DATA_VERSION}", *map(str, parts)])


def _phantom(rows: int, columns: int, phase: float, rng_noise: Any, np: Any) -> Any:
    """A 16-bit unsigned image (stored = HU + 1024): air, soft-tissue ellipse, bone ring, noise."""
    y, x = np.ogrid[-1.0 : 1.0 : rows * 1j, -1.0 : 1.0 : columns * 1j]
    a, b = 0.80 + 0.05 * np.sin(phase), 0.62 + 0.04 * np.cos(phase)
    r = (x / a) ** 2 + (y / b) ** 2
    image = np.full((rows, columns), -1000.0, dtype=np.float32)
    image[r < 1.0] = 40.0
    image[(r > 0.86) & (r < 1.0)] = 900.0
    image[((x - 0.25 * np.cos(phase)) ** 2 + (y + 0.1) ** 2) < 0.02] = 200.0
    image += rng_noise.standard_normal((rows, columns), dtype=np.float32) * 12.0
    return np.clip(image + 1024.0, 0, 4095).astype(np.uint16)


def _base_dataset(
    spec: DataSpec, index: int, series_index: int, sop_class: UID, ts: UID
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = _uid(spec.key, "instance", index)
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20261128"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = f"BENCH{hash_name(spec.key) % 10000:04d}"
    ds.ReferringPhysicianName = "Bench^Referrer"
    ds.StudyDescription = f"Benchmark {spec.name.upper()}"
    ds.SeriesDescription = f"{spec.name} series {series_index + 1}"
    ds.Manufacturer = "dicom-gw benchmark"
    ds.PatientName = f"Bench^{spec.name.capitalize()}"
    ds.PatientID = f"BENCH-{spec.name.upper()}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = _uid(spec.key, "study")
    ds.SeriesInstanceUID = _uid(spec.key, "series", series_index)
    ds.FrameOfReferenceUID = _uid(spec.key, "for")
    ds.StudyID = "1"
    ds.SeriesNumber = series_index + 1
    ds.InstanceNumber = index + 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def _tomography(ds: Dataset, spec: DataSpec, slice_index: int) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-179.2, -179.2, float(-slice_index)]
    ds.SliceLocation = float(-slice_index)
    ds.PositionReferenceIndicator = ""


def _write(ds: Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)


def _gen_series(spec: DataSpec, out: Path, kind: str) -> None:
    import numpy as np

    rng = np.random.default_rng([SEED, DATA_VERSION, hash_name(spec.key)])
    per_series = -(-spec.count // spec.series)
    for i in range(spec.count):
        series_index = i // per_series
        slice_index = i % per_series
        pixels = _phantom(spec.rows, spec.columns, slice_index / 37.0, rng, np)
        if kind == "mr":
            ds = _base_dataset(spec, i, series_index, MR_IMAGE, EXPLICIT_LE)
            _tomography(ds, spec, slice_index)
            ds.Modality = "MR"
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.EchoTime = 15.0
            ds.RepetitionTime = 500.0
            ds.MagneticFieldStrength = 1.5
            ds.EchoTrainLength = 1
        else:  # ct and rle
            ts = RLE_LOSSLESS if kind == "rle" else EXPLICIT_LE
            ds = _base_dataset(spec, i, series_index, CT_IMAGE, EXPLICIT_LE)
            _tomography(ds, spec, slice_index)
            ds.Modality = "CT"
            ds.KVP = 120
            ds.RescaleIntercept = -1024
            ds.RescaleSlope = 1
            ds.RescaleType = "HU"
            ds.WindowCenter = 40
            ds.WindowWidth = 400
            ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
            if ts == RLE_LOSSLESS:
                ds.compress(
                    RLE_LOSSLESS,
                    pixels,
                    encoding_plugin="pydicom",
                    generate_instance_uid=False,
                )
                _write(ds, out / f"{i + 1:06d}.dcm")
                continue
        ds.PixelData = pixels.tobytes()
        _write(ds, out / f"{i + 1:06d}.dcm")


def _gen_large(spec: DataSpec, out: Path) -> None:
    """Digital X-ray "for presentation" images of about 30 MB each."""
    import numpy as np

    rng = np.random.default_rng([SEED, DATA_VERSION, hash_name(spec.key)])
    for i in range(spec.count):
        ds = _base_dataset(spec, i, 0, DX_PRESENTATION, EXPLICIT_LE)
        ds.Modality = "DX"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImagerPixelSpacing = [0.1, 0.1]
        ds.PixelSpacing = [0.1, 0.1]
        ds.PatientOrientation = ["L", "F"]
        ds.BurnedInAnnotation = "NO"
        ds.PresentationLUTShape = "IDENTITY"
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.PixelData = _phantom(spec.rows, spec.columns, i, rng, np).tobytes()
        _write(ds, out / f"{i + 1:06d}.dcm")


def _gen_huge(spec: DataSpec, out: Path) -> None:
    """One multi-frame object, streamed: header by pydicom, then Pixel Data frame by frame.

    Pixel Data (7FE0,0010) is the last element of the data set, so the file is the header that
    pydicom writes for the data set without it, then the element's explicit-VR header (OW,
    32-bit length) and the frames appended one at a time: memory stays at a few frames.
    """
    import numpy as np

    rng = np.random.default_rng([SEED, DATA_VERSION, hash_name(spec.key)])
    for i in range(spec.count):
        ds = _base_dataset(spec, i, 0, MF_GRAYSCALE_WORD_SC, EXPLICIT_LE)
        ds.Modality = "OT"
        ds.ConversionType = "WSD"
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.NumberOfFrames = spec.frames
        ds.FrameIncrementPointer = 0x00182005  # Slice Location Vector
        ds.SliceLocationVector = [float(f) for f in range(spec.frames)]
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        frame_bytes = spec.rows * spec.columns * 2
        length = frame_bytes * spec.frames
        if length >= 0xFFFFFFFF:
            raise ValueError("pixel data too long for one defined-length element")
        path = out / f"{i + 1:06d}.dcm"
        _write(ds, path)
        # A bank of noisy frames, shifted per frame, keeps generation fast and frames distinct.
        bank = [_phantom(spec.rows, spec.columns, k / 5.0, rng, np) for k in range(8)]
        with path.open("ab") as fp:
            fp.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
            for f in range(spec.frames):
                frame = np.roll(bank[f % len(bank)], f // len(bank), axis=0)
                fp.write(frame.tobytes())
            fp.flush()
            os.fsync(fp.fileno())


def hash_name(text: str) -> int:
    """A stable (not per-process salted) integer from a string, for seeding."""
    value = 0
    for ch in text.encode():
        value = (value * 131 + ch) % (2**61 - 1)
    return value


GENERATORS = {
    "ct": lambda spec, out: _gen_series(spec, out, "ct"),
    "mr": lambda spec, out: _gen_series(spec, out, "mr"),
    "rle": lambda spec, out: _gen_series(spec, out, "rle"),
    "large": _gen_large,
    "huge": _gen_huge,
}


# --------------------------------------------------------------------------------------------
# The cache


def dataset_dir(spec: DataSpec, data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    return data_dir / f"v{DATA_VERSION}" / spec.key


def _load(spec: DataSpec, directory: Path) -> DataSet | None:
    manifest = directory / "manifest.json"
    if not manifest.exists():
        return None
    info = json.loads(manifest.read_text())
    files = [directory / name for name in info["files"]]
    if info.get("spec") != asdict(spec) or not all(f.exists() for f in files):
        return None
    return DataSet(spec, directory, files, int(info["total_bytes"]))


def ensure(spec: DataSpec, data_dir: Path = DEFAULT_DATA_DIR, log: bool = True) -> DataSet:
    """The data set for `spec`, generated into the cache first if it is not there yet."""
    directory = dataset_dir(spec, data_dir)
    found = _load(spec, directory)
    if found is not None:
        return found
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)
    partial.mkdir(parents=True)
    if log:
        print(
            f"datagen: generating {spec.key} ({spec.pixel_bytes / 1e6:.0f} MB of pixels) ...",
            file=sys.stderr,
            flush=True,
        )
    started = time.monotonic()
    GENERATORS[spec.name](spec, partial)
    files = sorted(p.name for p in partial.glob("*.dcm"))
    total = sum((partial / name).stat().st_size for name in files)
    manifest = {
        "spec": asdict(spec),
        "version": DATA_VERSION,
        "seed": SEED,
        "files": files,
        "total_bytes": total,
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=1))
    partial.rename(directory)
    if log:
        print(
            f"datagen: {spec.key}: {len(files)} files, {total / 1e6:.0f} MB in "
            f"{time.monotonic() - started:.0f}s",
            file=sys.stderr,
            flush=True,
        )
    loaded = _load(spec, directory)
    assert loaded is not None
    return loaded


def iter_all(quick: bool, data_dir: Path, only: set[str] | None = None) -> Iterator[DataSet]:
    for name, spec in specs(quick).items():
        if only is None or name in only:
            yield ensure(spec, data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke test")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--only", default="", help="comma-separated subset of " + ",".join(FULL))
    args = parser.parse_args(argv)
    only = {n.strip() for n in args.only.split(",") if n.strip()} or None
    for data in iter_all(args.quick, args.data_dir, only):
        print(
            f"{data.spec.key:32} {data.count:5d} files {data.total_bytes / 1e6:9.1f} MB  "
            f"{data.directory}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
