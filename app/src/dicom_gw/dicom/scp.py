"""The C-STORE SCP: receive, keep every byte, make it durable, record it, then answer.

Byte preservation. pynetdicom is told to stream each C-STORE data set straight into a file in
``storage/tmp`` (``STORE_RECV_CHUNKED_DATASET``), written as a DICOM Part 10 file: preamble,
``DICM``, File Meta Information naming the negotiated transfer syntax, then the data set bytes
exactly as they came off the wire. We never decode and re-encode: a gateway that rewrites a data
set can change it (private tags, odd lengths, undefined-length sequences), and a 1 GB object
never has to fit in memory.

Durability contract. Success (0x0000) is answered only after the file is fsynced, renamed into
``incoming/``, its directory fsynced, and its ingest job committed in PostgreSQL. Any failure on
that path answers 0xA700 (Out of Resources: the sender should retry later) and the durable file is
removed, so the sender's retry does not become a duplicate; nothing unacknowledged is indexed.

Scaling. One Python process is bound by one core (the GIL), so the SCP runs several receiver
processes that bind the same port with SO_REUSEPORT; the kernel spreads associations across them.
"""

from __future__ import annotations

import logging
import signal
import socket
import socketserver
import threading
import time
from functools import partial
from pathlib import Path
from tempfile import NamedTemporaryFile
from typing import Any, cast

import psycopg
from psycopg_pool import ConnectionPool
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, _config, acse, dimse_messages, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext
from pynetdicom.presentation import negotiate_as_acceptor as _negotiate_as_acceptor
from pynetdicom.sop_class import _STORAGE_CLASSES as STORAGE_CLASSES
from pynetdicom.transport import ThreadedAssociationServer

from dicom_gw import metrics
from dicom_gw.config import Settings
from dicom_gw.db.engine import conninfo
from dicom_gw.dicom.policy import AssociationPolicy
from dicom_gw.dicom.storage import Storage
from dicom_gw.dicom.tls import server_context
from dicom_gw.log import setup_logging
from dicom_gw.queue import ReceivedFile, enqueue_received
from dicom_gw.services.runtime import apply_runtime, load_runtime

log = logging.getLogger(__name__)

MAX_PDU_SIZE = 1 << 20
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000

# Every transfer syntax pydicom knows: the gateway stores and forwards bytes without decoding, so
# it need not restrict what a modality may send. The conformance statement lists them.
TRANSFER_SYNTAXES = [str(uid) for uid in AllTransferSyntaxes]


def negotiate_preferring_requestor(
    rq_contexts: list[PresentationContext],
    ac_contexts: list[PresentationContext],
    roles: Any = None,
) -> tuple[list[PresentationContext], Any]:
    """Accept, of each proposed context, the first transfer syntax the *requestor* listed.

    PS3.8 Annex B lets the acceptor pick any proposed syntax, and pynetdicom picks by its own
    order. A sender lists first the encoding it holds the data in; choosing that spares it a
    conversion (dcmtk would turn a big endian file into little endian before sending), so the
    bytes we keep are the bytes the modality had.
    """
    results, reply_roles = _negotiate_as_acceptor(rq_contexts, ac_contexts, roles)
    supported = {cx.abstract_syntax: set(cx.transfer_syntax) for cx in ac_contexts}
    requested = {cx.context_id: cx for cx in rq_contexts}
    for result in results:
        proposal = requested.get(result.context_id)
        if result.result != 0x00 or proposal is None:
            continue
        ours = supported.get(result.abstract_syntax, set())
        for syntax in proposal.transfer_syntax:
            if syntax in ours:
                result.transfer_syntax = [syntax]
                break
    return results, reply_roles


def configure_pynetdicom(tmp_dir: Path) -> None:
    """Process-wide pynetdicom settings for a receiver.

    pynetdicom creates its chunked receive file with ``tempfile.NamedTemporaryFile``; pointing it
    at ``storage/tmp`` keeps the file on the storage file system, so making it durable is an
    fsync and a rename, not a copy.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    acse.negotiate_as_acceptor = negotiate_preferring_requestor  # type: ignore[attr-defined]
    dimse_messages.NamedTemporaryFile = partial(  # type: ignore[attr-defined,assignment]
        NamedTemporaryFile, dir=tmp_dir, prefix="rx-"
    )


class GatewayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the socket options this deployment relies on."""

    daemon_threads = True

    def server_bind(self) -> None:
        sock = cast(socket.socket, self.socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock = cast(socket.socket, self.socket)
        client, address = sock.accept()
        # Without TCP_NODELAY, Nagle plus the peer's delayed ACK stall every small PDU ~40 ms.
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context:
            # The handshake happens on the association's first read, in its own thread: a client
            # that connects and stays silent must not stall the accept loop for everyone.
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address


class Receiver:
    """The event handlers of one receiver process."""

    def __init__(self, settings: Settings, storage: Storage, pool: ConnectionPool[Any]) -> None:
        self.settings = settings
        self.storage = storage
        self.pool = pool
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

    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_ESTABLISHED, self.on_established),
            (evt.EVT_RELEASED, self.on_closed),
            (evt.EVT_ABORTED, self.on_closed),
        ]

    def on_requested(self, event: evt.Event) -> None:
        request = cast(A_ASSOCIATE, event.assoc.requestor.primitive)
        peer = event.assoc.requestor.address
        called = str(request.called_ae_title)
        calling = str(request.calling_ae_title)
        rejection = self.policy.check(called, calling, peer)
        if rejection is None:
            return
        log.warning(
            "association rejected: %s",
            rejection.reason,
            extra={"calling_ae": calling.strip(), "called_ae": called.strip(), "peer": peer},
        )
        metrics.ASSOCIATIONS_REFUSED.labels(reason=rejection.reason.split(" ")[0]).inc()
        event.assoc.acse.send_reject(rejection.result, rejection.source, rejection.diagnostic)
        # As pynetdicom does for its own rejections: wait until the DUL has sent the
        # A-ASSOCIATE-RJ before the socket is closed, or the peer sees only a dropped connection.
        event.assoc.kill()

    def on_established(self, event: evt.Event) -> None:
        metrics.ASSOCIATIONS_ACTIVE.inc()

    def on_closed(self, event: evt.Event) -> None:
        metrics.ASSOCIATIONS_ACTIVE.dec()

    def on_echo(self, event: evt.Event) -> int:
        return STATUS_SUCCESS

    def on_store(self, event: evt.Event) -> int:
        started = time.perf_counter()
        assoc = event.assoc
        try:
            received_path = event.dataset_path
        except AttributeError:
            received_path = None
        if received_path is None or not received_path.exists():
            log.error("C-STORE without a data set", extra={"peer": assoc.requestor.address})
            return self._fail(STATUS_CANNOT_UNDERSTAND)
        if self.storage.usage_percent() >= self.settings.storage.disk_watermark_percent:
            # Crossing the watermark mid-association: refuse the rest, keep the headroom.
            log.error("storage above the disk watermark; refusing the instance")
            return self._fail(STATUS_OUT_OF_RESOURCES)

        try:
            stored = self.storage.commit(received_path)
        except OSError as exc:
            log.error("could not make the received file durable: %s", exc.strerror or exc)
            return self._fail(STATUS_OUT_OF_RESOURCES)

        request = cast(C_STORE, event.request)
        record = ReceivedFile(
            storage_path=stored.relative_path,
            sha256=stored.sha256,
            size_bytes=stored.size,
            sop_instance_uid=str(request.AffectedSOPInstanceUID or "") or None,
            sop_class_uid=str(request.AffectedSOPClassUID or "") or None,
            transfer_syntax_uid=str(event.context.transfer_syntax),
            calling_ae=str(assoc.requestor.ae_title).strip(),
            called_ae=str(assoc.acceptor.ae_title).strip(),
            peer_address=assoc.requestor.address,
        )
        try:
            with self.pool.connection() as conn:
                enqueue_received(conn, record)
        except (psycopg.Error, OSError) as exc:
            # Not recorded means not acknowledged: remove the file so that the sender's retry is
            # the only copy, and let recovery never see an orphan of an answered failure.
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


def build_ae(settings: Settings) -> AE:
    dicom = settings.dicom
    ae = AE(ae_title=dicom.ae_title)
    ae.maximum_associations = dicom.max_associations
    ae.acse_timeout = dicom.acse_timeout_seconds
    ae.dimse_timeout = dicom.dimse_timeout_seconds
    ae.network_timeout = dicom.network_timeout_seconds
    # Large enough that senders use few PDUs, small enough that a peer cannot make one
    # association hold an unbounded PDU in memory.
    ae.maximum_pdu_size = MAX_PDU_SIZE
    # The policy handler checks AE titles, so it can log the reason and also match peer networks.
    ae.require_called_aet = False
    ae.add_supported_context(VERIFICATION_SOP_CLASS)
    for uid in sorted(set(STORAGE_CLASSES.values())):
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    return ae


def serve(settings: Settings, index: int = 0, ready: Any = None) -> None:
    """Run one receiver process until SIGTERM/SIGINT, then drain its associations."""
    setup_logging(f"scp.{index}", settings.logging.level, settings.logging.format)
    storage = Storage(settings.storage.root, fsync=settings.storage.fsync)
    storage.prepare()
    configure_pynetdicom(storage.tmp_dir)
    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo(settings, "scp"),
        min_size=1,
        max_size=settings.dicom.max_associations,
        kwargs={"autocommit": True},
        timeout=settings.database.connect_timeout_seconds,
        open=False,
    )
    pool.open(wait=False)
    receiver = Receiver(settings, storage, pool)
    ae = build_ae(settings)

    addresses: list[tuple[tuple[str, int], Any]] = [
        ((settings.dicom.bind_address, settings.dicom.port), None)
    ]
    tls = settings.dicom.tls
    if tls.enabled and tls.certificate and tls.private_key:
        context = server_context(
            tls.certificate, tls.private_key, tls.ca_certificate, tls.require_client_certificate
        )
        addresses.append(((settings.dicom.bind_address, tls.port), context))

    servers = []
    for address, ssl_context in addresses:
        server = ae.make_server(
            address,
            evt_handlers=receiver.handlers(),
            ssl_context=ssl_context,
            server_class=GatewayServer,
        )
        thread = threading.Thread(target=server.serve_forever, name=f"accept-{address[1]}")
        thread.daemon = True
        thread.start()
        servers.append(server)
    log.info("receiver listening", extra={"ports": [a[0][1] for a in addresses]})
    if ready is not None:
        ready.set()

    stop = threading.Event()
    threading.Thread(
        target=receiver.refresh_runtime, args=(settings, stop), name="runtime", daemon=True
    ).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()

    for server in servers:
        # Stop accepting but let associations in progress finish (pynetdicom's own shutdown()
        # expects servers it started itself).
        socketserver.BaseServer.shutdown(server)
        server.server_close()
    deadline = time.monotonic() + settings.dicom.dimse_timeout_seconds
    while ae.active_associations and time.monotonic() < deadline:
        time.sleep(0.1)
    ae.shutdown()
    pool.close()
    log.info("receiver stopped")
