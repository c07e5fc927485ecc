"""The byte-preserving file store."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from dicom_gw.dicom import storage as storage_module
from dicom_gw.dicom.storage import SpareReceipts, Storage
from tests.support import wait_for


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


def test_concurrent_renames_share_one_directory_fsync(tmp_path: Path, monkeypatch) -> None:
    """While one directory fsync is in flight, later renames wait for one more, not one each."""
    directory = tmp_path / "incoming"
    directory.mkdir()
    group = storage_module._DirectoryGroupSync(directory)
    first_sync_started, release_first_sync = threading.Event(), threading.Event()
    synced_at: list[int] = []
    real_fsync_dir = storage_module._fsync_dir

    def fsync_dir(path: Path) -> None:
        synced_at.append(group.renamed)
        if len(synced_at) == 1:
            first_sync_started.set()
            release_first_sync.wait(timeout=30)
        real_fsync_dir(path)

    monkeypatch.setattr(storage_module, "_fsync_dir", fsync_dir)
    sources = []
    for n in range(6):
        source = tmp_path / f"receipt-{n}"
        source.write_bytes(b"x")
        sources.append(source)

    def rename(n: int) -> None:
        group.rename(sources[n], directory / f"{n}.dcm")

    leader = threading.Thread(target=rename, args=(0,))
    leader.start()
    assert first_sync_started.wait(timeout=30)
    followers = [threading.Thread(target=rename, args=(n,)) for n in range(1, 6)]
    for thread in followers:
        thread.start()
    deadline = time.monotonic() + 30
    while group.renamed < 6 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a condition (all five renamed), not a readiness guess
    release_first_sync.set()
    for thread in [leader, *followers]:
        thread.join(timeout=30)
    assert sorted(p.name for p in directory.iterdir()) == [f"{n}.dcm" for n in range(6)]
    # The leader's sync covered its own rename; the five made while it ran share the second.
    assert synced_at == [1, 6]
    assert group.synced == 6


def test_spare_receipts_are_empty_new_files_and_close_removes_the_unused(tmp_path: Path) -> None:
    spares = SpareReceipts(tmp_path, stock=2).start()
    taken = [spares.take() for _ in range(5)]  # more than the stock: the rest made on demand
    try:
        names = {file.name for file in taken}
        assert len(names) == 5 and all(Path(name).parent == tmp_path for name in names)
        assert all(Path(name).stat().st_size == 0 for name in names)
        # Refilled: two in the stock and one made, waiting for room.
        wait_for(lambda: len(list(tmp_path.iterdir())) == 8, what="the stock refilled")
    finally:
        for file in taken:
            file.close()
        spares.close()
    assert {str(p) for p in tmp_path.iterdir()} == names  # the spares left are removed
