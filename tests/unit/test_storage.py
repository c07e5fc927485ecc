"""The byte-preserving file store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dicom_gw.dicom.storage import Storage


def test_commit_moves_into_incoming_and_hashes_what_is_on_disk(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.prepare()
    received = storage.tmp_dir / "rx-1.dcm"
    payload = b"\x00" * 128 + b"DICM" + b"payload" * 1000
    received.write_bytes(payload)
    stored = storage.commit(received)
    assert not received.exists()
    assert stored.relative_path.startswith("incoming/")
    assert storage.absolute(stored.relative_path).read_bytes() == payload
    assert stored.sha256 == hashlib.sha256(payload).hexdigest()
    assert stored.size == len(payload)


def test_two_commits_never_share_a_name(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.prepare()
    paths = set()
    for i in range(50):
        received = storage.tmp_dir / f"rx-{i}.dcm"
        received.write_bytes(b"same bytes")
        paths.add(storage.commit(received).relative_path)
    assert len(paths) == 50


def test_paths_cannot_escape_the_root(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "root")
    with pytest.raises(ValueError):
        storage.absolute("../../etc/passwd")


def test_quarantine_keeps_the_file(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.prepare()
    received = storage.tmp_dir / "rx.dcm"
    received.write_bytes(b"junk")
    stored = storage.commit(received)
    moved = storage.quarantine(stored.relative_path)
    assert moved.startswith("quarantine/")
    assert storage.absolute(moved).read_bytes() == b"junk"
