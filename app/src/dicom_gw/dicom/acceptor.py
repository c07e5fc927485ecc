"""A lean DICOM Upper Layer acceptor for the Storage and Verification services.

Why not pynetdicom's acceptor: measured here, pynetdicom spends about 6 ms of CPU per CT instance
in its DUL and reactor threads (polling loops, an event queue per PDU, a decoded command set per
message), which makes one association slower than Orthanc. A receiver that stores bytes
and never decodes a data set needs only a small part of PS3.8: this module reads PDUs with
blocking I/O in one thread per association, negotiates presentation contexts, and streams each
C-STORE data set straight into its file while hashing it, so the bytes are touched once.
The requestor side (forwarding) is ``scu.py``; both share the codec in ``pdu.py``.

Scope (PS3.8 and PS3.7): A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF, A-RELEASE-RQ/RP, A-ABORT; C-ECHO and
C-STORE as SCP. Anything else (other DIMSE commands, malformed PDUs, PDUs longer than we offered)
ends the association with an A-ABORT, never with a crash. Extended negotiation, role selection,
user identity and asynchronous operations are not negotiated (answered with their defaults).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from dicom_gw.dicom.pdu import (
    ABORT,
    ASSOCIATE_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    IMPLICIT_VR_LITTLE_ENDIAN,
    MAX_ASSOCIATE_RQ,
    MAX_PDU_LENGTH,
    NO_DATA_SET,
    P_DATA_TF,
    RELEASE_RP,
    RELEASE_RQ,
    ProtocolError,
    abort,
    associate_rj,
    build_associate_ac,
    command_us,
    encode_response,
    file_meta,
    p_data,
    parse_associate_rq,
    parse_command,
    pdu,
    uid,
)

log = logging.getLogger(__name__)

# The PDU buffer's first size; it grows to the largest PDU a peer sends (at most what we offer).
PDU_BUFFER_START = 64 * 1024

__all__ = ["Association", "StoreRequest", "StoreTarget", "associate_rj"]


@dataclass(frozen=True)
class StoreRequest:
    """A C-STORE whose data set is being received into ``file``."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str
    called_ae: str
    peer_address: str


class StoreTarget(Protocol):
    """What the acceptor needs from the storage side (the SCP's Receiver implements it)."""

    def check_association(
        self, called: str, calling: str, peer: str
    ) -> tuple[int, int, int] | None:
        """None to accept, or the A-ASSOCIATE-RJ (result, source, diagnostic)."""
        ...

    def open_receipt(self, request: StoreRequest, meta: bytes) -> BinaryIO: ...

    def finish_receipt(self, request: StoreRequest, file: BinaryIO, sha256: str, size: int) -> int:
        """Make the receipt durable and recorded; return the C-STORE status to answer."""
        ...

    def abandon_receipt(self, file: BinaryIO) -> None: ...

    def receipt_write_failed(self, file: BinaryIO, error: OSError) -> BinaryIO:
        """A write failed (disk full, I/O error): drop the file, return where the rest drains.

        The rest of the data set must still be read off the wire so that the C-STORE can be
        answered (0xA700, the sender retries later) and the association go on.
        """
        ...


# -- one association -------------------------------------------------------------------------


@dataclass
class _Message:
    context_id: int
    command: bytearray = field(default_factory=bytearray)
    elements: dict[int, bytes] | None = None
    file: BinaryIO | None = None
    request: StoreRequest | None = None
    digest: Any = None
    size: int = 0


class Association:
    """Serve one connection from A-ASSOCIATE-RQ to release or abort."""

    def __init__(self, sock: socket.socket, peer: str, target: StoreTarget,
                 supported: Callable[[str], bool], transfer_syntaxes: set[str],
                 called_ae: str) -> None:  # fmt: skip
        self.sock = sock
        self.peer = peer
        self.target = target
        self.supported = supported
        self.transfer_syntaxes = transfer_syntaxes
        self.called_ae = called_ae
        self.accepted: dict[int, tuple[str, str]] = {}
        self.calling_ae = ""
        self.request_called_ae = ""
        self._header = memoryview(bytearray(6))
        self._buffer = memoryview(bytearray(PDU_BUFFER_START))

    def _recv_into(self, view: memoryview) -> None:
        filled = 0
        while filled < len(view):
            count = self.sock.recv_into(view[filled:])
            if not count:
                raise ConnectionError("peer closed the connection")
            filled += count

    def _readpdu(self, limit: int) -> tuple[int, memoryview]:
        """The next PDU's type and body, read into this association's buffer.

        The body is a view of a buffer the next read overwrites: a P-DATA-TF's fragments go to
        their file (or are copied) before that. Reading into one buffer, grown to the largest PDU
        seen, spares a copy of every data set byte (a list of received chunks joined into bytes).
        """
        header = self._header
        self._recv_into(header)
        pdu_type, _, length = struct.unpack_from(">BBL", header)
        if length > limit:
            raise ProtocolError(f"PDU of {length} bytes exceeds the {limit} offered")
        if length > len(self._buffer):
            self._buffer = memoryview(bytearray(length))
        body = self._buffer[:length]
        self._recv_into(body)
        return pdu_type, body

    def serve(self) -> None:
        message: _Message | None = None
        try:
            pdu_type, body = self._readpdu(MAX_ASSOCIATE_RQ)
            if pdu_type != ASSOCIATE_RQ:
                raise ProtocolError("expected A-ASSOCIATE-RQ")
            if not self._associate(bytes(body)):
                return
            while True:
                pdu_type, body = self._readpdu(MAX_PDU_LENGTH + 6)
                if pdu_type == P_DATA_TF:
                    message = self._p_data(body, message)
                elif pdu_type == RELEASE_RQ:
                    if message is not None:
                        raise ProtocolError("release requested in the middle of a message")
                    self.sock.sendall(pdu(RELEASE_RP, b"\x00" * 4))
                    return
                elif pdu_type == ABORT:
                    return
                else:
                    raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02X}")
        except ProtocolError as exc:
            log.warning("aborting association: %s", exc, extra={"peer": self.peer})
            self._send_quietly(abort(0x02, 0x00))
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.info("association ended: %s", type(exc).__name__, extra={"peer": self.peer})
        except Exception:
            log.exception("aborting association after an unexpected error")
            self._send_quietly(abort(0x02, 0x00))
        finally:
            if message is not None and message.file is not None:
                self.target.abandon_receipt(message.file)

    def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def _associate(self, body: bytes) -> bool:
        request = parse_associate_rq(body)
        self.calling_ae = request.calling_ae
        self.request_called_ae = request.called_ae
        rejection = self.target.check_association(request.called_ae, request.calling_ae, self.peer)
        if rejection is not None:
            self.sock.sendall(associate_rj(*rejection))
            return False
        results: list[tuple[int, int, str]] = []
        for context_id, abstract, syntaxes in request.contexts:
            if not self.supported(abstract):
                results.append((context_id, 3, IMPLICIT_VR_LITTLE_ENDIAN))  # abstract unsupported
                continue
            # The requestor's first choice we support: the encoding it holds the data in.
            chosen = next((ts for ts in syntaxes if ts in self.transfer_syntaxes), None)
            if chosen is None:
                results.append((context_id, 4, IMPLICIT_VR_LITTLE_ENDIAN))  # no common syntax
                continue
            self.accepted[context_id] = (abstract, chosen)
            results.append((context_id, 0, chosen))
        self.sock.sendall(build_associate_ac(request, body, results))
        return True

    def _p_data(self, body: memoryview, message: _Message | None) -> _Message | None:
        offset = 0
        while offset < len(body):
            if offset + 6 > len(body):
                raise ProtocolError("truncated PDV item")
            (length,) = struct.unpack_from(">L", body, offset)
            if length < 2 or offset + 4 + length > len(body):
                raise ProtocolError("PDV length out of bounds")
            context_id, control = body[offset + 4], body[offset + 5]
            fragment = body[offset + 6 : offset + 4 + length]
            offset += 4 + length
            if context_id not in self.accepted:
                raise ProtocolError(f"PDV on presentation context {context_id}, not accepted")
            if message is None:
                message = _Message(context_id)
            elif message.context_id != context_id:
                raise ProtocolError("PDV of another presentation context inside a message")
            if control & 0x01:  # command fragment
                if message.elements is not None:
                    raise ProtocolError("command fragment after the command was complete")
                message.command += fragment
                if control & 0x02:
                    message = self._command_complete(message)
            else:  # data set fragment
                if message.elements is None or message.file is None or message.request is None:
                    raise ProtocolError("data set fragment without a C-STORE command")
                try:
                    message.file.write(fragment)
                except OSError as exc:
                    message.file = self.target.receipt_write_failed(message.file, exc)
                message.digest.update(fragment)
                message.size += len(fragment)
                if control & 0x02:
                    self._store_complete(message)
                    message = None
        return message

    def _command_complete(self, message: _Message) -> _Message | None:
        elements = parse_command(bytes(message.command))
        message.elements = elements
        command = command_us(elements, 0x0100)
        message_id = command_us(elements, 0x0110)
        has_data = command_us(elements, 0x0800) != NO_DATA_SET
        abstract, transfer_syntax = self.accepted[message.context_id]
        if command == C_ECHO_RQ and not has_data:
            response = encode_response(C_ECHO_RSP, message_id, 0x0000, abstract.encode(), None)
            self.sock.sendall(p_data(message.context_id, 0x03, response))
            return None
        if command != C_STORE_RQ:
            raise ProtocolError(f"DIMSE command 0x{command:04X} is not supported")
        sop_class = uid(elements.get(0x0002, b""))
        sop_instance = uid(elements.get(0x1000, b""))
        if not has_data:
            self._answer_store(message, 0xC000, sop_class, sop_instance)  # nothing to store
            return None
        request = StoreRequest(sop_class, sop_instance, transfer_syntax, self.calling_ae,
                               self.request_called_ae, self.peer)  # fmt: skip
        meta = file_meta(
            sop_class or abstract,
            sop_instance,
            transfer_syntax,
            self.calling_ae,
            self.request_called_ae,
            self.peer,
        )
        message.request = request
        message.file = self.target.open_receipt(request, meta)
        message.digest = hashlib.sha256(meta)
        message.size = len(meta)
        return message

    def _store_complete(self, message: _Message) -> None:
        assert message.request is not None and message.file is not None
        file, message.file = message.file, None
        try:
            status = self.target.finish_receipt(
                message.request, file, message.digest.hexdigest(), message.size
            )
        except Exception:  # never answer success for what could not be made safe
            log.exception("storing a receipt failed unexpectedly")
            self.target.abandon_receipt(file)
            status = 0xA700
        self._answer_store(message, status, message.request.sop_class_uid,
                           message.request.sop_instance_uid)  # fmt: skip

    def _answer_store(self, message: _Message, status: int, sop_class: str, instance: str) -> None:
        assert message.elements is not None
        response = encode_response(C_STORE_RSP, command_us(message.elements, 0x0110), status,
                                   sop_class.encode(), instance.encode())  # fmt: skip
        self.sock.sendall(p_data(message.context_id, 0x03, response))
