"""Two gateway hosts sharing one storage directory (NFS in the distributed layout): recovery on one
host must not take over what the other host's receivers are still recording, nor sweep the other
host's partial receipts."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from dicom_gw import recovery
from dicom_gw.dicom.storage import Storage
from tests.conftest import Gateway
from tests.dicom_data import ct_series

GRACE = 120


def _place(storage: Path, relative: str, source: Path, age_seconds: float) -> Path:
    path = storage / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, path)
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))
    return path


def test_a_starting_scp_leaves_the_other_hosts_receipts_alone(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    shared = tmp_path / "shared-storage"
    options = {"storage": {"root": str(shared)}, "ingest": {"recovery_grace_seconds": GRACE}}
    make_gateway(**options)  # host A: its receivers are "running" (files below are theirs)
    host_b = make_gateway(**options)
    [source] = ct_series(tmp_path / "ct", count=1, size=16)
    # Host A renamed this a moment ago and is about to record it (or to discard it and answer a
    # failure): host B's start-up must leave it to A.
    in_flight = _place(shared, "incoming/20261128/11/in-flight.dcm", source, age_seconds=1)
    # A file no record ever came for (a crash long ago): host B recovers it.
    orphan = _place(shared, "incoming/20261128/09/orphan.dcm", source, age_seconds=GRACE + 60)
    # Host A's partial receipt (an association in progress) and host B's own left-over one.
    theirs = _place(shared, "tmp/gateway-a.example/rx-partial.dcm", source, age_seconds=GRACE + 60)
    ours = _place(shared, f"tmp/{socket.gethostname()}/rx-partial.dcm", source, age_seconds=1)

    host_b.start_scp()

    assert host_b.sql("SELECT storage_path, source FROM ingest_jobs") == [
        ("incoming/20261128/09/orphan.dcm", "recovery")
    ]
    assert in_flight.exists() and orphan.exists()
    assert theirs.exists(), "another host's partial receipt was swept"
    assert not ours.exists()  # this host's own partial receipt was never acknowledged: swept


def test_recovery_skips_a_file_its_receiver_discarded_meanwhile(
    make_gateway: Callable[..., Gateway], tmp_path: Path, monkeypatch
) -> None:
    gw = make_gateway()
    storage = Storage(gw.storage, fsync=False)
    storage.prepare()
    [source] = ct_series(tmp_path / "ct", count=1, size=16)
    kept = _place(gw.storage, "incoming/20261128/09/kept.dcm", source, age_seconds=600)
    discarded = _place(gw.storage, "incoming/20261128/09/discarded.dcm", source, age_seconds=600)
    real_unrecorded = recovery.unrecorded_paths

    def unrecorded_then_discarded(conn, paths):  # the other host's receiver wins the race here
        found = real_unrecorded(conn, paths)
        discarded.unlink()
        return found

    monkeypatch.setattr(recovery, "unrecorded_paths", unrecorded_then_discarded)
    url = gw.db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        assert recovery.recover_incoming(conn, storage, older_than_seconds=60) == 1
    assert kept.exists()
    assert gw.sql("SELECT storage_path FROM ingest_jobs") == [("incoming/20261128/09/kept.dcm",)]
