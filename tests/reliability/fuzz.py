"""A DICOM Upper Layer fuzzer (PS3.8) and data set mutator, independent of the gateway's code.

PDU level: each case opens a TCP connection, sends bytes (random, a mutated A-ASSOCIATE-RQ, or a
valid association followed by broken P-DATA-TF, wrong PDV flags, oversized lengths, a release in
the middle of a message...), then either half-closes and reads what the SCP answers until it
closes, or closes abruptly. Every case is generated from one seeded ``random.Random``, so a
failing case is reproduced by its seed and number.

Data set level: the data set bytes of pydicom's test files, mutated (bit flips, truncation,
overwritten runs, corrupted lengths, inserted bytes, a transfer syntax that lies), written as new
Part 10 files under a fresh SOP Instance UID, to be sent over valid associations.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import generate_uid

from tests.support import dataset_offset

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
PDU_TYPES = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07}


# -- building PDUs (PS3.8 9.3) ------------------------------------------------------------------


def pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def item(item_type: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body) if length is None else length) + body


def ae_field(title: str | bytes) -> bytes:
    raw = title.encode("ascii") if isinstance(title, str) else title
    return raw[:16].ljust(16, b" ")


def associate_rq(
    calling: str | bytes = "TESTSCU",
    called: str | bytes = "DICOM_GW",
    contexts: list[tuple[int, str, list[str]]] | None = None,
    max_pdu: int = 16384,
) -> bytes:
    contexts = contexts or [(1, VERIFICATION, [IMPLICIT_LE]), (3, CT_IMAGE, [EXPLICIT_LE])]
    body = bytearray(struct.pack(">HH", 1, 0)) + ae_field(called) + ae_field(calling)
    body += b"\x00" * 32 + item(0x10, APPLICATION_CONTEXT)
    for context_id, abstract, syntaxes in contexts:
        sub = item(0x30, abstract.encode()) + b"".join(item(0x40, ts.encode()) for ts in syntaxes)
        body += item(0x20, bytes([context_id, 0, 0, 0]) + sub)
    user = item(0x51, struct.pack(">L", max_pdu)) + item(0x52, b"1.2.3.4.5.6.7")
    body += item(0x50, user)
    return pdu(0x01, bytes(body))


def pdv(context_id: int, control: int, data: bytes, length: int | None = None) -> bytes:
    return (
        struct.pack(">LBB", len(data) + 2 if length is None else length, context_id, control) + data
    )


def p_data(*pdvs: bytes, length: int | None = None) -> bytes:
    return pdu(0x04, b"".join(pdvs), length)


def command(elements: list[tuple[int, bytes]]) -> bytes:
    """A DIMSE command set, implicit VR little endian, with its group length first."""

    def pad(value: bytes) -> bytes:
        return value + b"\x00" if len(value) % 2 else value

    body = b"".join(struct.pack("<HHL", 0, tag, len(pad(v))) + pad(v) for tag, v in elements)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def c_echo_rq(message_id: int = 1) -> bytes:
    return command([(0x0002, VERIFICATION.encode()), (0x0100, us(0x0030)),
                    (0x0110, us(message_id)), (0x0800, us(0x0101))])  # fmt: skip


def c_store_rq(sop_instance: str, message_id: int = 1, sop_class: str = CT_IMAGE) -> bytes:
    return command([(0x0002, sop_class.encode()), (0x0100, us(0x0001)),
                    (0x0110, us(message_id)), (0x0700, us(0)), (0x0800, us(0)),
                    (0x1000, sop_instance.encode())])  # fmt: skip


RELEASE_RQ = pdu(0x05, b"\x00" * 4)
ABORT = pdu(0x07, b"\x00\x00\x00\x00")


# -- reading answers ---------------------------------------------------------------------------


@dataclass
class Answer:
    pdus: list[tuple[int, bytes]]  # (type, body) of every whole PDU the SCP sent
    ended: str  # "closed" (EOF or reset) or "timeout" (the SCP neither answered nor closed)
    malformed: bool = False  # bytes that are not a PDU came back

    @property
    def types(self) -> list[int]:
        return [t for t, _ in self.pdus]

    def outcome(self) -> str:
        """How the association ended, as the peer saw it."""
        if self.ended == "timeout":
            return "hung"
        types = self.types
        if 0x03 in types:
            return "rejected"
        if 0x07 in types:
            return "aborted"
        statuses = [s for s in self.dimse_statuses() if s is not None]
        if any(s != 0 for s in statuses):
            return "failure status"
        if statuses or 0x06 in types:
            return "success"
        if 0x02 in types:
            return "accepted, then closed"
        return "closed"

    def dimse_statuses(self) -> list[int | None]:
        """The (0000,0900) Status of each DIMSE response carried in P-DATA-TF."""
        statuses: list[int | None] = []
        for pdu_type, body in self.pdus:
            if pdu_type != 0x04:
                continue
            offset = 0
            while offset + 6 <= len(body):
                (length,) = struct.unpack_from(">L", body, offset)
                data = body[offset + 6 : offset + 4 + length]
                offset += 4 + length
                statuses.append(_status(data))
        return statuses


def _status(data: bytes) -> int | None:
    offset = 0
    while offset + 8 <= len(data):
        group, element, length = struct.unpack_from("<HHL", data, offset)
        if (group, element) == (0, 0x0900) and length == 2:
            return int(struct.unpack_from("<H", data, offset + 8)[0])
        offset += 8 + length
    return None


def read_answer(sock: socket.socket, deadline: float) -> Answer:
    buffer = bytearray()
    ended = "closed"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            ended = "timeout"
            break
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            ended = "timeout"
            break
        except OSError:
            break  # reset: closed
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > 4 << 20:
            break
    pdus: list[tuple[int, bytes]] = []
    offset = 0
    malformed = False
    while offset + 6 <= len(buffer):
        pdu_type, _, length = struct.unpack_from(">BBL", buffer, offset)
        if pdu_type not in PDU_TYPES or offset + 6 + length > len(buffer):
            malformed = True
            break
        pdus.append((pdu_type, bytes(buffer[offset + 6 : offset + 6 + length])))
        offset += 6 + length
    if offset != len(buffer):
        malformed = True
    return Answer(pdus, ended, malformed)


def first_pdu(sock: socket.socket, timeout: float) -> tuple[int, bytes] | None:
    """Read exactly one PDU (the answer to our A-ASSOCIATE-RQ)."""
    sock.settimeout(timeout)
    header = b""
    try:
        while len(header) < 6:
            chunk = sock.recv(6 - len(header))
            if not chunk:
                return None
            header += chunk
        pdu_type, _, length = struct.unpack(">BBL", header)
        body = b""
        while len(body) < length:
            chunk = sock.recv(min(length - len(body), 65536))
            if not chunk:
                return None
            body += chunk
    except OSError:
        return None
    return pdu_type, body


# -- PDU-level cases ---------------------------------------------------------------------------


@dataclass
class Case:
    """What to send. ``handshake``: send a valid A-ASSOCIATE-RQ and read its A-ASSOCIATE-AC first.
    ``abrupt``: close without half-closing or reading (an RST when ``reset``)."""

    kind: str
    payload: bytes
    handshake: bool = False
    abrupt: bool = False
    reset: bool = False
    policy_ok: bool = True  # False: the RQ's AE titles must never be accepted
    must_not_succeed: bool = False  # a protocol violation: success would be wrong


def _flip(rng: random.Random, data: bytes, flips: int) -> bytes:
    out = bytearray(data)
    for _ in range(flips):
        position = rng.randrange(len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def _ae_policy_ok(rq: bytes) -> bool:
    """Would the gateway's policy accept this RQ's AE titles (called DICOM_GW, an allowed
    caller)? Mutations that keep both accepted are fine; others must be rejected."""
    if len(rq) < 6 + 36:
        return False
    called = rq[10:26].decode("ascii", "replace").strip()
    calling = rq[26:42].decode("ascii", "replace").strip()
    return called == "DICOM_GW" and calling in {"TESTSCU", "STORESCU", "ECHOSCU"}


def mutate_rq(rng: random.Random) -> Case:
    base = associate_rq(
        calling=rng.choice(["TESTSCU", "TESTSCU", "INTRUDER", "", "\\\\\\", "A" * 16]),
        called=rng.choice(["DICOM_GW", "DICOM_GW", "dicom_gw", "OTHER", ""]),
        contexts=[
            (rng.choice([1, 3, 5, 0, 2, 255]), rng.choice([VERIFICATION, CT_IMAGE, "1.2.3", ""]),
             rng.sample([IMPLICIT_LE, EXPLICIT_LE, "1.2.840.10008.1.2.4.50", "9.9"],
                        rng.randint(0, 3)))
            for _ in range(rng.randint(0, 6))
        ],
        max_pdu=rng.choice([0, 1, 16384, 0xFFFFFFFF]),
    )  # fmt: skip
    how = rng.randrange(9)
    if how == 0:
        data = _flip(rng, base, rng.randint(1, 8))
    elif how == 1:
        data = base[: rng.randrange(len(base))]  # truncated
    elif how == 2:
        data = pdu(0x01, base[6:], length=rng.choice([0, 1, 67, 0xFFFFFFFF, 1 << 30]))
    elif how == 3:  # an item length that lies
        body = bytearray(base[6:])
        position = rng.randrange(68, len(body) - 4) if len(body) > 72 else 68
        body[position + 2 : position + 4] = struct.pack(">H", rng.randrange(0x10000))
        data = pdu(0x01, bytes(body))
    elif how == 4:
        data = base + rng.randbytes(rng.randint(1, 64))
    elif how == 5:  # a protocol version nobody supports, or garbage in the reserved fields
        body = bytearray(base[6:])
        body[0:2] = struct.pack(">H", rng.randrange(0x10000))
        data = pdu(0x01, bytes(body))
    elif how == 6:  # an oversized RQ: more items than any peer needs
        extra = b"".join(item(0x20, bytes([1, 0, 0, 0]) + item(0x30, CT_IMAGE.encode()))
                         for _ in range(rng.randint(500, 4000)))  # fmt: skip
        data = pdu(0x01, base[6:] + extra)
    elif how == 7:
        data = base  # valid: accepted or rejected by policy, then we close
    else:  # two RQs back to back
        data = base + base
    policy_ok = _ae_policy_ok(data)
    return Case(f"mutated A-ASSOCIATE-RQ #{how}", data, abrupt=rng.random() < 0.15,
                policy_ok=policy_ok)  # fmt: skip


def random_bytes(rng: random.Random) -> Case:
    size = rng.choice([0, 1, 5, 6, 7, 64, 512, 4096])
    data = rng.randbytes(size)
    if data and rng.random() < 0.5:
        data = bytes([rng.choice(sorted(PDU_TYPES | {0x00, 0x08, 0xFF})), 0]) + data[2:]
    return Case("random bytes", data, abrupt=rng.random() < 0.2, reset=rng.random() < 0.5)


def after_association(rng: random.Random) -> Case:
    """A valid association, then something PS3.8 does not allow (or an abrupt end)."""
    uid = "1.2.826.0.1.3680043.9.7433.9." + str(rng.randrange(10**12))
    store = c_store_rq(uid)
    data_set = rng.randbytes(rng.randint(0, 300))
    how = rng.randrange(16)
    if how == 0:  # a data set fragment before any command
        payload = p_data(pdv(3, 0x02, data_set))
    elif how == 1:  # PDV flags: a command sent as data, or reserved bits set (to be ignored)
        flags = rng.choice([0x00, 0x02, 0x04, 0x01, 0xF3, 0xFF])
        payload = p_data(pdv(1, flags, c_echo_rq()))
        return Case(f"after association #1 flags 0x{flags:02X}", payload, handshake=True,
                    must_not_succeed=not flags & 0x01)  # fmt: skip
    elif how == 2:  # a PDV longer than its PDU
        payload = p_data(pdv(1, 0x03, c_echo_rq(), length=rng.choice([200, 0xFFFF, 0xFFFFFFFF])))
    elif how == 3:  # a PDV too short to carry its header
        payload = p_data(pdv(1, 0x03, b"", length=rng.choice([0, 1])))
    elif how == 4:  # a PDU longer than the SCP offered to receive
        payload = p_data(pdv(3, 0x00, b"\x00" * 64), length=rng.choice([(1 << 20) + 7, 0xFFFFFFFF]))
    elif how == 5:  # a PDV on a presentation context that was never accepted
        payload = p_data(pdv(rng.choice([5, 7, 0, 255]), 0x03, c_echo_rq()))
    elif how == 6:  # garbage as a command set
        payload = p_data(pdv(1, 0x03, rng.randbytes(64)))
    elif how == 7:  # a DIMSE command the SCP does not serve (C-FIND-RQ)
        payload = p_data(pdv(1, 0x03, command([(0x0002, VERIFICATION.encode()),
                                               (0x0100, us(0x0020)), (0x0110, us(1)),
                                               (0x0800, us(0x0101))])))  # fmt: skip
    elif how == 8:  # a release in the middle of a C-STORE
        payload = p_data(pdv(3, 0x03, store), pdv(3, 0x00, data_set)) + RELEASE_RQ
    elif how == 9:  # a C-STORE whose data set never ends: we stop sending (abrupt close)
        payload = p_data(pdv(3, 0x03, store), pdv(3, 0x00, data_set))
        return Case("C-STORE cut mid data set", payload, handshake=True, abrupt=True,
                    reset=rng.random() < 0.5)  # fmt: skip
    elif how == 10:  # an unknown PDU type
        payload = pdu(rng.choice([0x00, 0x08, 0x09, 0x7F, 0xFF]), b"\x00" * rng.randint(0, 32))
    elif how == 11:  # a second A-ASSOCIATE-RQ on an established association
        payload = associate_rq()
    elif how == 12:  # a command fragment after the command was complete
        payload = p_data(pdv(3, 0x03, store), pdv(3, 0x01, store))
    elif how == 13:  # a valid echo then an A-ABORT
        payload = p_data(pdv(1, 0x03, c_echo_rq())) + ABORT
    elif how == 14:  # a complete, valid C-STORE of garbage bytes: stored as received
        payload = p_data(pdv(3, 0x03, store), pdv(3, 0x02, data_set or b"\x00\x00")) + RELEASE_RQ
        return Case("valid C-STORE of random bytes", payload, handshake=True)
    else:  # a valid echo and release
        payload = p_data(pdv(1, 0x03, c_echo_rq())) + RELEASE_RQ
        return Case("valid C-ECHO and release", payload, handshake=True)
    return Case(f"after association #{how}", payload, handshake=True,
                abrupt=rng.random() < 0.1, must_not_succeed=how != 13)  # fmt: skip


GENERATORS: list[tuple[float, Callable[[random.Random], Case]]] = [
    (0.35, mutate_rq),
    (0.15, random_bytes),
    (0.50, after_association),
]


def make_case(rng: random.Random) -> Case:
    pick = rng.random()
    for weight, generator in GENERATORS:
        if pick < weight:
            return generator(rng)
        pick -= weight
    return after_association(rng)


@dataclass
class Result:
    case: Case
    outcome: str
    answer: Answer | None
    accepted: bool = False  # the SCP sent an A-ASSOCIATE-AC for the case's own RQ

    def violations(self) -> list[str]:
        found = []
        if self.outcome == "hung":
            found.append("the SCP neither answered nor closed the connection")
        if self.answer is not None and self.answer.malformed:
            found.append("the SCP sent bytes that are not a well-formed PDU")
        if self.accepted and not self.case.policy_ok:
            found.append("an A-ASSOCIATE-RQ with disallowed AE titles was accepted")
        if self.case.must_not_succeed and self.outcome == "success":
            found.append(f"a protocol violation ({self.case.kind}) answered with success")
        return found


def run_case(port: int, case: Case, timeout: float = 10) -> Result:
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if case.handshake:
            sock.sendall(associate_rq())
            reply = first_pdu(sock, timeout)
            if reply is None or reply[0] != 0x02:
                outcome = "rejected" if reply and reply[0] == 0x03 else "closed"
                return Result(case, f"handshake {outcome}", None)
        try:
            sock.sendall(case.payload)
        except OSError:
            return Result(case, "closed while sending", None)
        if case.abrupt:
            if case.reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return Result(case, "abrupt close (by us)", None)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        answer = read_answer(sock, deadline)
    accepted = not case.handshake and bool(answer.types) and answer.types[0] == 0x02
    return Result(case, answer.outcome(), answer, accepted)


# -- data set mutations ------------------------------------------------------------------------


MUTATIONS = ("flip", "truncate", "overwrite", "length", "insert", "syntax", "empty")


def mutate_file(source: Path, target: Path, rng: random.Random) -> tuple[Path, str]:
    """A new Part 10 file: ``source``'s data set bytes mutated, under a fresh SOP Instance UID
    in its File Meta (the command's Affected SOP Instance UID). Returns (path, mutation)."""
    raw = source.read_bytes()
    offset = dataset_offset(source)
    from pydicom.filereader import read_file_meta_info

    meta_in = read_file_meta_info(source)
    data = bytearray(raw[offset:])
    mutation = rng.choice(MUTATIONS)
    syntax = str(meta_in.TransferSyntaxUID)
    if mutation == "flip" and data:
        data = bytearray(_flip(rng, bytes(data), rng.randint(1, 32)))
    elif mutation == "truncate" and data:
        data = data[: rng.randrange(len(data))]
    elif mutation == "overwrite" and data:
        start = rng.randrange(len(data))
        run = rng.randbytes(rng.randint(1, 64))
        data[start : start + len(run)] = run
    elif mutation == "length" and len(data) > 8:
        start = rng.randrange(len(data) - 4)
        data[start : start + 4] = rng.choice([b"\xff\xff\xff\xff", b"\xfe\xff\xff\x7f",
                                              struct.pack("<L", rng.getrandbits(32))])  # fmt: skip
    elif mutation == "insert":
        start = rng.randrange(len(data) + 1)
        data[start:start] = rng.randbytes(rng.randint(1, 64))
    elif mutation == "syntax":  # the file meta lies about the encoding
        syntax = rng.choice([IMPLICIT_LE, EXPLICIT_LE, "1.2.840.10008.1.2.2",
                             "1.2.840.10008.1.2.1.99"])  # fmt: skip
    elif mutation == "empty":
        data = bytearray()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = meta_in.MediaStorageSOPClassUID
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.9.7433.1"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as f:
        f.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(f, meta, enforce_standard=True)  # type: ignore[arg-type]
        f.write(bytes(data))
    return target, mutation
