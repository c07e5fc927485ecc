"""The C-STORE / C-ECHO SCU: send stored files to a destination exactly as they were received.

Each file goes out as its stored data set bytes, read from disk in PDU-sized pieces, never
decoded and re-encoded. For each instance we propose its SOP class with only its own stored
transfer syntax: if the destination will not take that syntax, the send fails with that reason
instead of the data being transcoded behind anyone's back.

This is a small blocking requestor over the codec in ``pdu.py`` rather than pynetdicom's:
measured here, pynetdicom's reactor thread can take a C-STORE response off the queue before the
waiting sender sees it, and the association then stalls until the DIMSE timeout. With one thread
reading the socket and socket timeouts for every wait, there is no such race, and every wait is
bounded.

Failures are classified, because what to do next depends on the cause: a refused connection or a
rejected association says nothing about the instance (retry later), a failure status is the
destination's verdict on it (retry, then dead-letter), a missing file or a changed hash is ours
(never retried: flagged for an operator).
"""

from __future__ import annotations

import contextlib
import enum
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dicom_gw.dicom import pdu
from dicom_gw.dicom.tls import client_context

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1-255
WARNING_STATUSES = {0x0001, 0xB000, 0xB006, 0xB007}
DEFAULT_PDU_DATA = 1 << 20  # when the peer sets no limit (0)


class Peer(Protocol):
    """What the SCU needs of a destination (the service layer's Destination satisfies it)."""

    ae_title: str
    host: str
    port: int
    calling_ae_title: str
    tls_enabled: bool
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None


@dataclass(frozen=True)
class Timeouts:
    acse: float = 30
    dimse: float = 120
    network: float = 60


class FailureKind(enum.StrEnum):
    CONNECTION_REFUSED = "connection refused"
    CONNECTION_TIMEOUT = "connection timed out"
    NETWORK = "network error"
    REJECTED = "association rejected"
    ABORTED = "association aborted"
    SYNTAX_NOT_ACCEPTED = "transfer syntax not accepted"
    FAILURE_STATUS = "failure status"
    NO_RESPONSE = "no response"


class AssociationFailed(Exception):
    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class StoreResult:
    status: int | None
    kind: FailureKind | None = None
    detail: str | None = None

    @property
    def success(self) -> bool:
        return self.status == 0x0000

    @property
    def warning(self) -> bool:
        return self.status is not None and (
            self.status in WARNING_STATUSES or 0xB000 <= self.status <= 0xBFFF
        )


def dataset_offset(header: bytes) -> int:
    """Where the data set starts in a Part 10 file we stored: after the File Meta group, whose
    length the (0002,0000) element gives (the writer always includes it, PS3.10 7.1)."""
    if header[128:132] != b"DICM" or header[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a Part 10 file with a File Meta Information group length")
    (group_length,) = struct.unpack_from("<L", header, 140)
    return 144 + int(group_length)


class Requestor:
    """One open association, used by one thread."""

    def __init__(self, sock: socket.socket, accepted: dict[tuple[str, str], int],
                 peer_max_pdu: int, timeouts: Timeouts) -> None:  # fmt: skip
        self.sock = sock
        self.accepted = accepted
        self.max_data = (peer_max_pdu - 6) if peer_max_pdu > 6 else DEFAULT_PDU_DATA
        self.timeouts = timeouts
        self.is_established = True
        self._message_id = 0

    def _recv_exact(self, count: int) -> bytes:
        chunks, remaining = [], count
        while remaining:
            chunk = self.sock.recv(min(remaining, 1 << 20))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _read_pdu(self) -> tuple[int, bytes]:
        pdu_type, _, length = struct.unpack(">BBL", self._recv_exact(6))
        if length > pdu.MAX_PDU_LENGTH + 6:
            raise pdu.ProtocolError("PDU longer than we offered to receive")
        return pdu_type, self._recv_exact(length)

    def _next_id(self) -> int:
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def _response(self, message_id: int) -> dict[int, bytes]:
        """Read until the complete command set answering ``message_id``."""
        command = bytearray()
        while True:
            pdu_type, body = self._read_pdu()
            if pdu_type == pdu.ABORT:
                raise ConnectionError("the destination aborted the association")
            if pdu_type != pdu.P_DATA_TF:
                raise pdu.ProtocolError(f"unexpected PDU type 0x{pdu_type:02X}")
            offset = 0
            while offset + 6 <= len(body):
                (length,) = struct.unpack_from(">L", body, offset)
                control = body[offset + 5]
                command += body[offset + 6 : offset + 4 + length]
                offset += 4 + length
                if control & 0x01 and control & 0x02:
                    elements = pdu.parse_command(bytes(command))
                    if pdu.command_us(elements, 0x0120) == message_id:
                        return elements
                    command = bytearray()  # a stale answer: keep waiting for ours

    def _fail(self) -> None:
        self.is_established = False
        with contextlib.suppress(OSError):
            self.sock.sendall(pdu.abort(0x00, 0x00))
        self.sock.close()

    def store(
        self, path: Path, sop_class: str, sop_instance: str, transfer_syntax: str
    ) -> StoreResult:
        context_id = self.accepted.get((sop_class, transfer_syntax))
        if context_id is None:
            return StoreResult(None, FailureKind.SYNTAX_NOT_ACCEPTED,
                               f"{transfer_syntax} for {sop_class}")  # fmt: skip
        message_id = self._next_id()
        command = pdu.encode_command([
            (0x0002, sop_class.encode()), (0x0100, pdu.us(pdu.C_STORE_RQ)),
            (0x0110, pdu.us(message_id)), (0x0700, pdu.us(0)), (0x0800, pdu.us(0)),
            (0x1000, sop_instance.encode()),
        ])  # fmt: skip
        try:
            self.sock.settimeout(self.timeouts.network)
            self.sock.sendall(pdu.p_data(context_id, 0x03, command))
            with path.open("rb") as f:
                f.seek(dataset_offset(f.read(512)))
                chunk = f.read(self.max_data)
                while chunk:
                    following = f.read(self.max_data)
                    self.sock.sendall(pdu.p_data(context_id, 0x00 if following else 0x02, chunk))
                    chunk = following
            self.sock.settimeout(self.timeouts.dimse)
            elements = self._response(message_id)
        except (OSError, pdu.ProtocolError) as exc:
            self._fail()
            return StoreResult(None, FailureKind.NO_RESPONSE, f"{type(exc).__name__}: {exc}")
        status = pdu.command_us(elements, 0x0900)
        if status == 0x0000 or status in WARNING_STATUSES or 0xB000 <= status <= 0xBFFF:
            return StoreResult(status)
        comment = elements.get(0x0902, b"").decode("ascii", "replace").strip("\x00 ")
        return StoreResult(status, FailureKind.FAILURE_STATUS,
                           f"0x{status:04X}" + (f" {comment}" if comment else ""))  # fmt: skip

    def echo(self) -> int | None:
        context_id = self.accepted.get((VERIFICATION_SOP_CLASS, IMPLICIT_VR_LITTLE_ENDIAN))
        if context_id is None:
            return None
        message_id = self._next_id()
        command = pdu.encode_command([
            (0x0002, VERIFICATION_SOP_CLASS.encode()), (0x0100, pdu.us(pdu.C_ECHO_RQ)),
            (0x0110, pdu.us(message_id)), (0x0800, pdu.us(pdu.NO_DATA_SET)),
        ])  # fmt: skip
        try:
            self.sock.settimeout(self.timeouts.dimse)
            self.sock.sendall(pdu.p_data(context_id, 0x03, command))
            return pdu.command_us(self._response(message_id), 0x0900)
        except (OSError, pdu.ProtocolError):
            self._fail()
            return None

    def release(self) -> None:
        if not self.is_established:
            return
        self.is_established = False
        try:
            self.sock.settimeout(self.timeouts.acse)
            self.sock.sendall(pdu.pdu(pdu.RELEASE_RQ, b"\x00" * 4))
            while self._read_pdu()[0] not in (pdu.RELEASE_RP, pdu.ABORT):
                pass
        except (OSError, pdu.ProtocolError):
            pass
        finally:
            self.sock.close()


def _connect(peer: Peer, timeouts: Timeouts) -> socket.socket:
    try:
        sock = socket.create_connection((peer.host, peer.port), timeout=min(timeouts.network, 30))
    except ConnectionRefusedError as exc:
        raise AssociationFailed(FailureKind.CONNECTION_REFUSED, f"{peer.host}:{peer.port}") from exc
    except TimeoutError as exc:
        raise AssociationFailed(FailureKind.CONNECTION_TIMEOUT, f"{peer.host}:{peer.port}") from exc
    except OSError as exc:
        raise AssociationFailed(
            FailureKind.NETWORK, f"{peer.host}:{peer.port}: {exc.strerror or exc}"
        ) from exc
    # Nagle plus delayed ACK would stall each small PDU ~40 ms on a low-latency link.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not peer.tls_enabled:
        return sock
    context = client_context(
        Path(peer.tls_ca_file) if peer.tls_ca_file else None,
        Path(peer.tls_cert_file) if peer.tls_cert_file else None,
        Path(peer.tls_key_file) if peer.tls_key_file else None,
    )
    try:
        return context.wrap_socket(sock, server_hostname=peer.host)
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise AssociationFailed(FailureKind.NETWORK, f"TLS handshake failed: {exc}") from exc


def open_association(peer: Peer, contexts: list[tuple[str, str]], timeouts: Timeouts) -> Requestor:
    """Associate proposing one (SOP class, transfer syntax) pair per presentation context."""
    proposed = {2 * i + 1: pair for i, pair in enumerate(contexts[:MAX_CONTEXTS])}
    sock = _connect(peer, timeouts)
    try:
        sock.settimeout(timeouts.acse)
        sock.sendall(pdu.build_associate_rq(
            peer.calling_ae_title, peer.ae_title,
            [(cid, sop, [ts]) for cid, (sop, ts) in proposed.items()],
        ))  # fmt: skip
        probe = Requestor(sock, {}, 0, timeouts)
        pdu_type, body = probe._read_pdu()
    except (OSError, pdu.ProtocolError) as exc:
        sock.close()
        raise AssociationFailed(FailureKind.ABORTED, f"during negotiation: {exc}") from exc
    if pdu_type == pdu.ASSOCIATE_RJ and len(body) >= 4:
        sock.close()
        raise AssociationFailed(
            FailureKind.REJECTED,
            f"result 0x{body[1]:02X} source 0x{body[2]:02X} reason 0x{body[3]:02X}",
        )
    if pdu_type != pdu.ASSOCIATE_AC:
        sock.close()
        raise AssociationFailed(FailureKind.ABORTED, f"answered with PDU type 0x{pdu_type:02X}")
    try:
        accept = pdu.parse_associate_ac(body)
    except pdu.ProtocolError as exc:
        sock.close()
        raise AssociationFailed(FailureKind.ABORTED, str(exc)) from exc
    accepted = {
        proposed[cid]: cid
        for cid, (result, _syntax) in accept.results.items()
        if result == pdu.ASSOCIATE_AC_RESULT_ACCEPT and cid in proposed
    }
    return Requestor(sock, accepted, accept.peer_max_pdu, timeouts)


def send_file(assoc: Requestor, path: Path, sop_class: str, transfer_syntax: str,
              sop_instance: str = "") -> StoreResult:  # fmt: skip
    """C-STORE one stored file over an open association; never raises for a peer's answer."""
    if not sop_instance:
        from pydicom.filereader import read_file_meta_info

        sop_instance = str(read_file_meta_info(path).MediaStorageSOPInstanceUID)
    return assoc.store(path, sop_class, sop_instance, transfer_syntax)


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    status: int | None
    round_trip_ms: float
    detail: str


def echo(peer: Peer, timeouts: Timeouts | None = None) -> EchoResult:
    """C-ECHO the peer: the operator's first question about a destination."""
    started = time.perf_counter()
    try:
        assoc = open_association(
            peer, [(VERIFICATION_SOP_CLASS, IMPLICIT_VR_LITTLE_ENDIAN)], timeouts or Timeouts()
        )
    except AssociationFailed as exc:
        return EchoResult(False, None, (time.perf_counter() - started) * 1000, str(exc))
    try:
        status = assoc.echo()
    finally:
        assoc.release()
    elapsed = (time.perf_counter() - started) * 1000
    if status is None:
        return EchoResult(False, None, elapsed, "no response to C-ECHO")
    return EchoResult(status == 0, status, elapsed, "success" if status == 0 else f"0x{status:04X}")
