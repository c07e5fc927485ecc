"""Start-up recovery: durable files in ``incoming/`` that no ingest job knows about.

The SCP renames a file into ``incoming/`` before it commits the job, so a crash between the two
leaves a durable, unrecorded file. The sender was not answered success, so it will resend, but the
file may be the only copy (a sender may also give up). Recovery enqueues it: at worst the instance
is indexed twice as two versions, never lost.

Several gateway hosts may share one storage directory (NFS). Another host's receivers keep running
while this one recovers, so recovery must leave alone what they are about to record: files younger
than the grace period (a receiver between its rename and its record), and files that disappear
while recovery looks at them (a receiver whose record failed discards its file and answers a
failure: recording it here would index an instance the sender was told was not stored).
Partial receipts are per host (``tmp/<host>/``), so no host sweeps another's.
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import Any

import psycopg
from pydicom.filereader import read_file_meta_info

from dicom_gw.dicom.storage import Storage
from dicom_gw.queue import ReceivedFile, enqueue_received, unrecorded_paths

log = logging.getLogger(__name__)
BATCH = 1000


def _describe(storage: Storage, relative_path: str) -> ReceivedFile:
    from dicom_gw.dicom.storage import sha256_of

    path = storage.absolute(relative_path)
    sha256, size = sha256_of(path)
    sop_instance = sop_class = transfer_syntax = calling = called = peer = None
    try:
        meta = read_file_meta_info(path)
        sop_instance = str(meta.get("MediaStorageSOPInstanceUID", "")) or None
        sop_class = str(meta.get("MediaStorageSOPClassUID", "")) or None
        transfer_syntax = str(meta.get("TransferSyntaxUID", "")) or None
        calling = str(meta.get("SendingApplicationEntityTitle", "")).strip() or None
        called = str(meta.get("ReceivingApplicationEntityTitle", "")).strip() or None
        address = str(meta.get("SendingPresentationAddress", ""))
        if address.startswith("dicom://"):
            peer = address.removeprefix("dicom://").strip("[]") or None
    except Exception as exc:  # unreadable meta: the ingest worker quarantines it with the reason
        log.warning("recovered file has unreadable file meta: %s", type(exc).__name__)
    return ReceivedFile(
        storage_path=relative_path,
        sha256=sha256,
        size_bytes=size,
        sop_instance_uid=sop_instance,
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
        calling_ae=calling,
        called_ae=called,
        peer_address=peer,
        source="recovery",
    )


def recover_incoming(
    conn: psycopg.Connection[Any], storage: Storage, older_than_seconds: float = 0
) -> int:
    """Enqueue every unrecorded file in ``incoming/`` older than the grace period. Returns count.

    The grace period matters when receivers are already running, on this host or on another one
    sharing the storage: a file renamed a moment ago is about to be recorded by its receiver and
    must be left to it.
    """
    recovered = 0
    files = (path for path, _mtime in storage.incoming_files(older_than_seconds))
    while batch := list(islice(files, BATCH)):
        for relative_path in unrecorded_paths(conn, batch):
            try:
                received = _describe(storage, relative_path)
            except FileNotFoundError:
                continue  # discarded by its receiver since it was listed: never acknowledged
            enqueue_received(conn, received)
            recovered += 1
    if recovered:
        log.warning("recovered %d durable file(s) that had no ingest record", recovered)
    return recovered
