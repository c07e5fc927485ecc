"""The C-STORE SCP: receive, keep every byte, make it durable, record it, then answer.

Byte preservation. Each C-STORE data set is streamed, fragment by fragment as it arrives, into a
file in ``storage/tmp`` written as a DICOM Part 10 file: preamble, ``DICM``, File Meta
Information naming the negotiated transfer syntax, then the data set bytes exactly as they came
off the wire. Nothing is decoded or re-encoded: a gateway that rewrites a data set can change it
(private tags, odd lengths, undefined-length sequences), and a 1 GB object never has to fit in
memory. The SHA-256 is computed while writing, so the bytes are read once.

Durability contract. Success (0x0000) is answered only after the file is fsynced, renamed into
``incoming/``, its directory fsynced, and its ingest job committed in PostgreSQL. Any failure on
that path answers 0xA700 (Out of Resources: the sender should retry later) and the file is
removed, so the sender's retry does not become a duplicate; nothing unacknowledged is indexed.

The durable file in ``incoming/`` is itself the journal of the receipt: recovery enqueues any file
without a record (at start, and periodically in the ingest workers). So the ingest job's commit
uses ``synchronous_commit = off``: it is committed before we answer, but PostgreSQL may flush its
WAL a few milliseconds later. If PostgreSQL crashed in between, the record is lost and the file
is not, and reconciliation restores the record. This saves one disk flush per instance, a third
of the time a single association waits (measured: file fsync 2.6 ms, directory 1.3 ms, WAL 2.5
ms per CT instance on this machine's virtual disk).

Scaling. One Python process is bound by one core (the GIL), so the SCP runs several receiver
processes that bind the same port with SO_REUSEPORT; the kernel spreads associations across them.
The protocol itself is ``dicom_gw.dicom.acceptor``, a lean Upper Layer acceptor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import socketserver
import ssl
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
from psycopg_pool import ConnectionPool
from pydicom.uid import AllTransferSyntaxes
from pynetdicom.sop_class import _STORAGE_CLASSES as STORAGE_CLASSES

from dicom_gw import metrics
from dicom_gw.config import Settings
from dicom_gw.db.engine import conninfo
from dicom_gw.dicom.acceptor import Association, StoreRequest, associate_rj
from dicom_gw.dicom.policy import AssociationPolicy
from dicom_gw.dicom.storage import SpareReceipts, Storage
from dicom_gw.dicom.tls import server_context
from dicom_gw.log import setup_logging
from dicom_gw.queue import ReceivedFile, enqueue_received
from dicom_gw.services.runtime import apply_runtime, load_runtime

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)

# Every transfer syntax pydicom knows: the gateway stores and forwards bytes without decoding, so
# it need not restrict what a modality may send. The conformance statement lists them.
TRANSFER_SYNTAXES = frozenset(str(uid) for uid in AllTransferSyntaxes)
SOP_CLASSES = frozenset({*map(str, STORAGE_CLASSES.values()), VERIFICATION_SOP_CLASS})


class _FailedReceipt:
    """Where a data set goes when its file could not be created: drained, then refused."""

    name = ""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def write(self, data: Any) -> int:
        return len(data)

    def close(self) -> None:
        pass


class Receiver:
    """The storage side of the SCP, shared by the associations of one receiver process."""

    def __init__(self, settings: Settings, storage: Storage, pool: ConnectionPool[Any]) -> None:
        self.settings = settings
        self.storage = storage
        self.pool = pool
        self.spares = SpareReceipts(storage.tmp_dir)
        self.apply(settings)

    def apply(self, settings: Settings) -> None:
        """Adopt new settings (the live overrides an admin saved); swaps are atomic per field."""
        self.settings = settings
        self.policy = AssociationPolicy(
            settings.dicom, self.storage.usage_percent, settings.storage.disk_watermark_percent
        )

    def refresh_runtime(self, base: Settings, stop: threading.Event, every: float = 10) -> None:
        while not stop.wait(every):
            try:
                with self.pool.connection() as conn:
                    self.apply(apply_runtime(base, load_runtime(conn, base)))
            except Exception as exc:  # keep the last good policy; receiving must go on
                log.warning("could not refresh runtime settings: %s", type(exc).__name__)

    # -- StoreTarget ---------------------------------------------------------------------------
    def check_association(
        self, called: str, calling: str, peer: str
    ) -> tuple[int, int, int] | None:
        rejection = self.policy.check(called, calling, peer)
        if rejection is None:
            return None
        log.warning(
            "association rejected: %s",
            rejection.reason,
            extra={"calling_ae": calling, "called_ae": called, "peer": peer},
        )
        metrics.ASSOCIATIONS_REFUSED.labels(reason=rejection.reason.split(" ")[0]).inc()
        return rejection.result, rejection.source, rejection.diagnostic

    def open_receipt(self, request: StoreRequest, meta: bytes) -> BinaryIO:
        try:
            file = self.spares.take()
            file.write(meta)
        except OSError as exc:
            log.error("could not create the receipt file: %s", exc.strerror or exc)
            return _FailedReceipt(exc.strerror or str(exc))  # type: ignore[return-value]
        return file

    def abandon_receipt(self, file: BinaryIO) -> None:
        """An association ended mid-data set: nothing was acknowledged, nothing is kept."""
        with contextlib.suppress(OSError):  # closing flushes; on a full disk that fails too
            file.close()
        if file.name:
            Path(file.name).unlink(missing_ok=True)

    def receipt_write_failed(self, file: BinaryIO, error: OSError) -> BinaryIO:
        log.error("could not write the receipt file: %s", error.strerror or error)
        self.abandon_receipt(file)
        return _FailedReceipt(error.strerror or str(error))  # type: ignore[return-value]

    def finish_receipt(self, request: StoreRequest, file: BinaryIO, sha256: str, size: int) -> int:
        started = time.perf_counter()
        if isinstance(file, _FailedReceipt):
            return self._fail(STATUS_OUT_OF_RESOURCES)
        path = Path(file.name)
        try:
            file.flush()
            if self.storage.fsync:
                os.fdatasync(file.fileno())  # data and size; mtime need not be durable
            file.close()
            if self.storage.usage_percent() >= self.settings.storage.disk_watermark_percent:
                # Crossing the watermark mid-association: refuse the rest, keep the headroom.
                path.unlink(missing_ok=True)
                log.error("storage above the disk watermark; refusing the instance")
                return self._fail(STATUS_OUT_OF_RESOURCES)
            stored = self.storage.place(path, sha256, size)
        except OSError as exc:
            file.close()
            path.unlink(missing_ok=True)
            log.error("could not make the received file durable: %s", exc.strerror or exc)
            return self._fail(STATUS_OUT_OF_RESOURCES)
        record = ReceivedFile(
            storage_path=stored.relative_path,
            sha256=stored.sha256,
            size_bytes=stored.size,
            sop_instance_uid=request.sop_instance_uid or None,
            sop_class_uid=request.sop_class_uid or None,
            transfer_syntax_uid=request.transfer_syntax_uid,
            calling_ae=request.calling_ae,
            called_ae=request.called_ae,
            peer_address=request.peer_address or None,
        )
        try:
            with self.pool.connection() as conn:
                enqueue_received(conn, record)
        except (psycopg.Error, OSError) as exc:
            # Not recorded means not acknowledged: remove the file so that the sender's retry is
            # the only copy, and recovery never sees an orphan of an answered failure.
            self.storage.discard(stored.relative_path)
            log.error("could not record the received file: %s", type(exc).__name__)
            return self._fail(STATUS_OUT_OF_RESOURCES)
        metrics.RECEIVED_INSTANCES.inc()
        metrics.RECEIVED_BYTES.inc(stored.size)
        metrics.STORE_SECONDS.observe(time.perf_counter() - started)
        return STATUS_SUCCESS

    @staticmethod
    def _fail(status: int) -> int:
        metrics.STORE_FAILURES.labels(status=f"0x{status:04X}").inc()
        return status


class AcceptorServer(socketserver.ThreadingTCPServer):
    """One thread per association; the port shared with the other receivers (SO_REUSEPORT)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], receiver: Receiver,
                 ssl_context: ssl.SSLContext | None) -> None:  # fmt: skip
        self.receiver = receiver
        self.ssl_context = ssl_context
        self.active = 0
        self.lock = threading.Lock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class _Handler(socketserver.BaseRequestHandler):
    server: AcceptorServer

    def handle(self) -> None:
        server = self.server
        dicom = server.receiver.settings.dicom
        sock: socket.socket = self.request
        # Without TCP_NODELAY, Nagle plus the peer's delayed ACK stall every small PDU ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(dicom.acse_timeout_seconds)
        with server.lock:
            server.active += 1
            over_limit = server.active > dicom.max_associations
        metrics.ASSOCIATIONS_ACTIVE.inc()
        try:
            if server.ssl_context is not None:
                # Handshake here, in this association's thread, never in the accept loop.
                sock = server.ssl_context.wrap_socket(sock, server_side=True)
            peer = str(self.client_address[0])
            if over_limit:
                _reject_after_request(sock, LOCAL_LIMIT_EXCEEDED)
                metrics.ASSOCIATIONS_REFUSED.labels(reason="limit").inc()
                return
            association = Association(
                sock, peer, server.receiver, SOP_CLASSES.__contains__, set(TRANSFER_SYNTAXES),
                dicom.ae_title,
            )  # fmt: skip
            sock.settimeout(dicom.network_timeout_seconds)
            association.serve()
        except (OSError, ssl.SSLError) as exc:
            log.info("connection ended before association: %s", type(exc).__name__)
        finally:
            metrics.ASSOCIATIONS_ACTIVE.dec()
            with server.lock:
                server.active -= 1
            with contextlib.suppress(OSError):
                sock.close()


def _reject_after_request(sock: socket.socket, reason: tuple[int, int, int]) -> None:
    """Read the A-ASSOCIATE-RQ (the reject answers it), then reject with the given reason."""
    header = sock.recv(6)
    if len(header) == 6:
        remaining = int.from_bytes(header[2:6], "big")
        while remaining > 0:
            chunk = sock.recv(min(remaining, 65536))
            if not chunk:
                return
            remaining -= len(chunk)
        sock.sendall(associate_rj(*reason))


def _asynchronous_commit(conn: psycopg.Connection[Any]) -> None:
    """See the module docstring: the durable file is the receipt's journal."""
    conn.execute("SET synchronous_commit = off")


def serve(settings: Settings, index: int = 0) -> None:
    """Run one receiver process until SIGTERM/SIGINT, then let its associations finish."""
    setup_logging(f"scp.{index}", settings.logging.level, settings.logging.format)
    storage = Storage(settings.storage.root, fsync=settings.storage.fsync)
    storage.prepare()
    storage.tmp_dir.mkdir(parents=True, exist_ok=True)
    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo(settings, "scp"),
        configure=_asynchronous_commit,
        min_size=1,
        max_size=settings.dicom.max_associations,
        kwargs={"autocommit": True},
        timeout=settings.database.connect_timeout_seconds,
        open=False,
    )
    pool.open(wait=False)
    receiver = Receiver(settings, storage, pool)
    receiver.spares.start()

    listeners: list[tuple[tuple[str, int], ssl.SSLContext | None]] = [
        ((settings.dicom.bind_address, settings.dicom.port), None)
    ]
    tls = settings.dicom.tls
    if tls.enabled and tls.certificate and tls.private_key:
        context = server_context(
            tls.certificate, tls.private_key, tls.ca_certificate, tls.require_client_certificate
        )
        listeners.append(((settings.dicom.bind_address, tls.port), context))

    servers = []
    for address, ssl_context in listeners:
        server = AcceptorServer(address, receiver, ssl_context)
        threading.Thread(
            target=server.serve_forever, name=f"accept-{address[1]}", daemon=True
        ).start()
        servers.append(server)
    log.info("receiver listening", extra={"ports": [a[0][1] for a in listeners]})

    stop = threading.Event()
    threading.Thread(
        target=receiver.refresh_runtime, args=(settings, stop), name="runtime", daemon=True
    ).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()

    for server in servers:
        server.shutdown()  # stop accepting; associations in progress go on in their threads
        server.server_close()
    deadline = time.monotonic() + settings.dicom.dimse_timeout_seconds
    while any(s.active for s in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    receiver.spares.close()
    pool.close()
    log.info("receiver stopped")
