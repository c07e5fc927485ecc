"""The byte-preserving file store.

Layout under the storage root::

    tmp/<host>/  files being received; never acknowledged, swept when that host's SCP starts
    incoming/    durable received files, YYYYMMDD/HH/<uuid>.dcm (a resent SOP Instance UID gets a
                 new name, so nothing acknowledged is ever overwritten)
    quarantine/  files the ingest worker could not parse, kept with the reason recorded

A file is made durable the POSIX way: fsync the file, rename it into place, fsync the directory
(and the parent of any directory created on the way). Only then may the SCP record it and answer.
Paths in the database are relative to the root, so the root can move.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import queue
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20
# Small PDVs (16 KB from many senders) are gathered into one write; a larger one (dcmtk sends
# PDUs as large as we offer, 1 MB) is written straight from the PDU buffer, not copied in first.
RECEIPT_BUFFER = 64 * 1024

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredFile:
    relative_path: str
    sha256: str
    size: int


def sha256_of(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return digest.hexdigest(), f.tell()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirectoryGroupSync:
    """Renames into one directory made durable together: one fsync covers every earlier rename.

    Concurrent associations in one receiver land in the same hour directory. A directory fsync
    makes durable every entry renamed into it before the fsync began, so a thread whose rename is
    already covered by a sync in flight waits for it instead of issuing its own (group commit, as
    a database does with its WAL). Each receipt still returns only after a sync that began after
    its own rename completed.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.renamed = 0  # renames done so far, in order
        self.synced = 0  # renames a completed fsync covers
        self._syncing = False
        self._cond = threading.Condition()

    def rename(self, source: Path, target: Path) -> None:
        with self._cond:
            os.rename(source, target)
            self.renamed += 1
            mine = self.renamed
            while self.synced < mine:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing, covered = True, self.renamed
                self._cond.release()
                try:
                    _fsync_dir(self.directory)
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                self.synced = max(self.synced, covered)


class Storage:
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        # Per host, so hosts sharing the storage (NFS) never sweep each other's receipts.
        self.tmp_dir = root / "tmp" / socket.gethostname()
        self.incoming_dir = root / "incoming"
        self.quarantine_dir = root / "quarantine"
        self._known_dirs: set[Path] = set()
        self._lock = threading.Lock()
        self._group_syncs: dict[Path, _DirectoryGroupSync] = {}

    def prepare(self) -> None:
        for directory in (self.root, self.tmp_dir, self.incoming_dir, self.quarantine_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def absolute(self, relative_path: str) -> Path:
        path = (self.root / relative_path).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError("path escapes the storage root")
        return path

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def _ensure_dir(self, directory: Path) -> None:
        if directory in self._known_dirs:
            return
        with self._lock:
            missing: list[Path] = []
            probe = directory
            while not probe.exists():
                missing.append(probe)
                probe = probe.parent
            directory.mkdir(parents=True, exist_ok=True)
            if self.fsync:
                # A new directory entry is durable only once its parent is synced.
                for created in reversed(missing):
                    _fsync_dir(created.parent)
            self._known_dirs.add(directory)

    def _incoming_target(self) -> Path:
        now = dt.datetime.now(dt.UTC)
        return (
            self.incoming_dir
            / now.strftime("%Y%m%d")
            / now.strftime("%H")
            / f"{uuid.uuid4().hex}.dcm"
        )

    def commit(self, received: Path) -> StoredFile:
        """Make a fully written file in ``tmp/`` durable in ``incoming/`` and describe it.

        The hash is taken from what is on disk, so it covers exactly the bytes that were kept.
        """
        with received.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256")
            size = f.tell()
            if self.fsync:
                os.fsync(f.fileno())
        return self.place(received, digest.hexdigest(), size)

    def place(self, received: Path, sha256: str, size: int) -> StoredFile:
        """Rename a written and fsynced receipt into ``incoming/`` and sync the directory."""
        target = self._incoming_target()
        self._ensure_dir(target.parent)
        if not self.fsync:
            os.rename(received, target)
            return StoredFile(self.relative(target), sha256, size)
        with self._lock:
            group = self._group_syncs.get(target.parent)
            if group is None:
                # One directory per hour: forget the past hours' so the map stays small.
                self._group_syncs = {target.parent: _DirectoryGroupSync(target.parent)}
                group = self._group_syncs[target.parent]
        try:
            group.rename(received, target)
        except OSError:
            # Not durable means not acknowledged; do not leave it for recovery to index.
            target.unlink(missing_ok=True)
            raise
        return StoredFile(self.relative(target), sha256, size)

    def discard(self, relative_path: str) -> None:
        """Remove a file whose receipt failed after it was made durable (never acknowledged)."""
        with contextlib.suppress(FileNotFoundError):
            self.absolute(relative_path).unlink()

    def quarantine(self, relative_path: str) -> str:
        source = self.absolute(relative_path)
        target = self.quarantine_dir / source.relative_to(self.incoming_dir)
        self._ensure_dir(target.parent)
        shutil.move(source, target)
        if self.fsync:
            _fsync_dir(target.parent)
        return self.relative(target)

    def sweep_tmp(self, older_than_seconds: float = 0) -> int:
        """Delete partial receipts (aborted associations, crashes); none was ever acknowledged."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            try:
                if entry.is_file() and entry.stat().st_mtime <= cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def incoming_files(self, older_than_seconds: float = 0) -> Iterator[tuple[str, float]]:
        """Every durable received file, with its mtime, for start-up recovery."""
        cutoff = time.time() - older_than_seconds
        for dirpath, _dirnames, filenames in os.walk(self.incoming_dir):
            for name in filenames:
                if not name.endswith(".dcm"):
                    continue
                path = Path(dirpath) / name
                try:
                    mtime = path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if mtime <= cutoff:
                    yield self.relative(path), mtime

    def usage_percent(self) -> float:
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent  # not created yet: the file system it will live on
        usage = shutil.disk_usage(probe)
        return 100.0 * usage.used / usage.total if usage.total else 100.0


class SpareReceipts:
    """Empty receipt files in ``tmp/``, created ahead of need by a background thread.

    Creating a file allocates an inode and updates the directory: 0.1-0.6 ms here, during
    which a single association's sender waits, on every instance. Taken from this stock, the
    file is ready when the C-STORE command arrives, and the next one is created while the sender
    prepares its next request. A spare is an empty file in ``tmp/``: the receiver's start sweeps
    what a crash left; ``close`` removes the rest.
    """

    def __init__(self, directory: Path, stock: int = 4) -> None:
        self.directory = directory
        self._ready: queue.Queue[BinaryIO] = queue.Queue(maxsize=stock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="spare-receipts", daemon=True)

    def start(self) -> SpareReceipts:
        self._thread.start()
        return self

    def create(self) -> BinaryIO:
        path = self.directory / f"rx-{uuid.uuid4().hex}.dcm"
        return path.open("xb", buffering=RECEIPT_BUFFER)

    def take(self) -> BinaryIO:
        """A new, empty receipt file open for writing (created now if the stock is empty)."""
        try:
            return self._ready.get_nowait()
        except queue.Empty:
            return self.create()

    def _fill(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                spare = self.create()
            except OSError as exc:  # full or read-only disk: take() reports it per instance
                log.warning("could not create a spare receipt file: %s", exc.strerror or exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            while not self._stop.is_set():
                try:
                    self._ready.put(spare, timeout=0.5)
                    break
                except queue.Full:
                    continue
            else:
                _discard(spare)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        while True:
            try:
                _discard(self._ready.get_nowait())
            except queue.Empty:
                return


def _discard(file: BinaryIO) -> None:
    file.close()
    with contextlib.suppress(OSError):
        os.unlink(file.name)
