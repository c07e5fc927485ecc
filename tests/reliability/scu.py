"""A small blocking C-STORE SCU for the reliability tests: a modality whose every answer is known.

One thread reads the socket, every wait has a timeout, and each data set goes out as the bytes
of its file after the File Meta, unchanged. pynetdicom's requestor is not used here: its reactor
thread can take a C-STORE response off its queue before the waiting caller sees it, so now and
then a store the gateway answered looks unanswered (seen under fuzzing load, and by the
gateway's own SCU, which replaced it for the same reason). A test that must tell a lost answer
from a lost instance cannot have that.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.reliability import fuzz
from tests.support import dataset_offset

DEFAULT_MAX_DATA = 1 << 16


@dataclass(frozen=True)
class Stored:
    path: Path
    status: int | None  # None: no answer
    error: str = ""


class Refused(Exception):
    """The association was not established: why, as the peer said it (or did not)."""


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(min(count - len(data), 1 << 20))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        data += chunk
    return bytes(data)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    pdu_type, _, length = struct.unpack(">BBL", _recv_exact(sock, 6))
    if length > 16 << 20:
        raise ConnectionError(f"PDU of {length} bytes")
    return pdu_type, _recv_exact(sock, length)


def _parse_ac(body: bytes) -> tuple[dict[int, tuple[int, str]], int]:
    """Presentation context results {id: (result, transfer syntax)} and the peer's max PDU."""
    results: dict[int, tuple[int, str]] = {}
    max_pdu = 0
    offset = 68
    while offset + 4 <= len(body):
        item_type, _, length = struct.unpack_from(">BBH", body, offset)
        value = body[offset + 4 : offset + 4 + length]
        offset += 4 + length
        if item_type == 0x21 and length >= 4:
            syntax, sub = "", 4
            while sub + 4 <= len(value):
                sub_type, _, sub_length = struct.unpack_from(">BBH", value, sub)
                if sub_type == 0x40:
                    syntax = value[sub + 4 : sub + 4 + sub_length].rstrip(b"\0 ").decode()
                sub += 4 + sub_length
            results[value[0]] = (value[2], syntax)
        elif item_type == 0x50:
            sub = 0
            while sub + 4 <= len(value):
                sub_type, _, sub_length = struct.unpack_from(">BBH", value, sub)
                if sub_type == 0x51 and sub_length == 4:
                    (max_pdu,) = struct.unpack_from(">L", value, sub + 4)
                sub += 4 + sub_length
    return results, max_pdu


class Association:
    def __init__(
        self,
        host: str,
        port: int,
        contexts: Sequence[tuple[str, str]],
        calling: str,
        called: str,
        timeout: float,
    ) -> None:
        proposed = {2 * i + 1: pair for i, pair in enumerate(contexts[:128])}
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise Refused(f"connect: {type(exc).__name__}") from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(
                fuzz.associate_rq(
                    calling, called, [(cid, sop, [ts]) for cid, (sop, ts) in proposed.items()]
                )
            )
            pdu_type, body = read_pdu(self.sock)
        except OSError as exc:
            self.sock.close()
            raise Refused(f"no answer to the association request: {type(exc).__name__}") from exc
        if pdu_type != 0x02:
            self.sock.close()
            if pdu_type == 0x03 and len(body) >= 4:
                raise Refused(f"rejected ({body[1]}, {body[2]}, {body[3]})")
            raise Refused(f"answered with PDU 0x{pdu_type:02X}")
        results, max_pdu = _parse_ac(body)
        self.accepted = {
            pair: cid
            for cid, pair in proposed.items()
            if results.get(cid, (1, ""))[0] == 0 and results[cid][1] == pair[1]
        }
        self.max_data = max_pdu - 6 if max_pdu > 6 else DEFAULT_MAX_DATA
        self.established = True
        self._message_id = 0

    def store(self, path: Path, sop_class: str, sop_instance: str, syntax: str) -> Stored:
        context = self.accepted.get((sop_class, syntax))
        if context is None:
            return Stored(path, None, f"presentation context not accepted: {syntax}")
        self._message_id = self._message_id % 0xFFFF + 1
        command = fuzz.c_store_rq(sop_instance, self._message_id, sop_class)
        try:
            self.sock.sendall(fuzz.p_data(fuzz.pdv(context, 0x03, command)))
            with path.open("rb") as f:
                f.seek(dataset_offset(path))
                chunk = f.read(self.max_data)
                while True:
                    following = f.read(self.max_data)
                    flags = 0x00 if following else 0x02
                    self.sock.sendall(fuzz.p_data(fuzz.pdv(context, flags, chunk)))
                    if not following:
                        break
                    chunk = following
            return Stored(path, self._response())
        except (OSError, ValueError) as exc:
            self.established = False
            return Stored(path, None, f"no answer: {type(exc).__name__}: {exc}")

    def _response(self) -> int | None:
        command = bytearray()
        while True:
            pdu_type, body = read_pdu(self.sock)
            if pdu_type == 0x07:
                raise ConnectionError("the SCP aborted the association")
            if pdu_type != 0x04:
                raise ConnectionError(f"unexpected PDU 0x{pdu_type:02X}")
            offset = 0
            while offset + 6 <= len(body):
                (length,) = struct.unpack_from(">L", body, offset)
                control = body[offset + 5]
                command += body[offset + 6 : offset + 4 + length]
                offset += 4 + length
                if control & 0x03 == 0x03:
                    return fuzz._status(bytes(command))

    def release(self) -> None:
        try:
            if self.established:
                self.sock.sendall(fuzz.RELEASE_RQ)
                while read_pdu(self.sock)[0] not in (0x06, 0x07):
                    pass
        except OSError:
            pass
        finally:
            self.sock.close()
