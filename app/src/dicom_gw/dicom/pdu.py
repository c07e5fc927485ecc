"""DICOM Upper Layer PDUs and DIMSE command sets (PS3.8 9.3, PS3.7 6.3, E.1), both directions.

The gateway's acceptor and requestor share this codec. Only what Storage and Verification need:
A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF, A-RELEASE, A-ABORT, and implicit VR little endian command sets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
IMPLEMENTATION_VERSION = b"DICOM_GW_01"
IMPLEMENTATION_CLASS_UID = PYDICOM_IMPLEMENTATION_UID.encode("ascii")
MAX_PDU_LENGTH = 1 << 20  # what we offer to receive; larger PDUs are a protocol error
MAX_ASSOCIATE_RQ = 64 * 1024

# PDU types (PS3.8 9.3)
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07

# DIMSE command fields (PS3.7 E.1)
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
NO_DATA_SET = 0x0101


class ProtocolError(Exception):
    """The peer broke PS3.8; the association ends with an A-ABORT."""


@dataclass(frozen=True)
class AssociateRequest:
    called_ae: str
    calling_ae: str
    contexts: list[tuple[int, str, list[str]]]  # (id, abstract syntax, transfer syntaxes)
    peer_max_pdu: int


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def uid(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii", "replace")


def parse_associate_rq(body: bytes) -> AssociateRequest:
    if len(body) < 68:
        raise ProtocolError("A-ASSOCIATE-RQ too short")
    called = body[4:20].decode("ascii", "replace").strip()
    calling = body[20:36].decode("ascii", "replace").strip()
    offset, contexts, peer_max = 68, [], 0
    while offset + 4 <= len(body):
        item_type, _, length = struct.unpack_from(">BBH", body, offset)
        value = body[offset + 4 : offset + 4 + length]
        if len(value) != length:
            raise ProtocolError("truncated item in A-ASSOCIATE-RQ")
        offset += 4 + length
        if item_type == 0x20:  # presentation context
            if length < 4:
                raise ProtocolError("presentation context item too short")
            context_id, abstract, syntaxes, sub = value[0], "", [], 4
            while sub + 4 <= len(value):
                sub_type, _, sub_length = struct.unpack_from(">BBH", value, sub)
                raw = value[sub + 4 : sub + 4 + sub_length]
                sub += 4 + sub_length
                if sub_type == 0x30:
                    abstract = uid(raw)
                elif sub_type == 0x40:
                    syntaxes.append(uid(raw))
            contexts.append((context_id, abstract, syntaxes))
        elif item_type == 0x50:  # user information
            sub = 0
            while sub + 4 <= len(value):
                sub_type, _, sub_length = struct.unpack_from(">BBH", value, sub)
                if sub_type == 0x51 and sub_length == 4:
                    (peer_max,) = struct.unpack_from(">L", value, sub + 4)
                sub += 4 + sub_length
    return AssociateRequest(called, calling, contexts, peer_max)


def build_associate_ac(
    request: AssociateRequest, raw_rq: bytes, results: list[tuple[int, int, str]]
) -> bytes:
    """A-ASSOCIATE-AC echoing the request's header fields, one result item per context."""
    body = bytearray(raw_rq[0:4])  # protocol version + reserved
    body += raw_rq[4:36]  # called and calling AE titles, echoed as received (PS3.8 9.3.3)
    body += b"\x00" * 32
    body += item(0x10, APPLICATION_CONTEXT)
    for context_id, result, syntax in results:
        ts_item = item(0x40, syntax.encode("ascii"))
        body += item(0x21, bytes([context_id, 0, result, 0]) + ts_item)
    user = item(0x51, struct.pack(">L", MAX_PDU_LENGTH))
    user += item(0x52, IMPLEMENTATION_CLASS_UID)
    user += item(0x55, IMPLEMENTATION_VERSION)
    body += item(0x50, user)
    return pdu(ASSOCIATE_AC, bytes(body))


def associate_rj(result: int, source: int, diagnostic: int) -> bytes:
    return pdu(ASSOCIATE_RJ, bytes([0, result, source, diagnostic]))


def abort(source: int = 0x02, reason: int = 0x00) -> bytes:
    return pdu(ABORT, bytes([0, 0, source, reason]))


# -- the DIMSE command set: implicit VR little endian, group 0000 only (PS3.7 6.3.1) ----------


def parse_command(raw: bytes) -> dict[int, bytes]:
    elements: dict[int, bytes] = {}
    offset = 0
    while offset + 8 <= len(raw):
        group, element, length = struct.unpack_from("<HHL", raw, offset)
        value = raw[offset + 8 : offset + 8 + length]
        if group != 0x0000 or len(value) != length:
            raise ProtocolError("malformed command set")
        elements[element] = value
        offset += 8 + length
    return elements


def command_us(elements: dict[int, bytes], element: int) -> int:
    value = elements.get(element)
    if value is None or len(value) != 2:
        raise ProtocolError(f"command element (0000,{element:04X}) missing or malformed")
    return int(struct.unpack("<H", value)[0])


def _pad(value: bytes) -> bytes:
    return value + b"\x00" if len(value) % 2 else value


def encode_response(command: int, message_id: int, status: int, sop_class: bytes,
                    sop_instance: bytes | None) -> bytes:  # fmt: skip
    elements = [(0x0002, _pad(sop_class)), (0x0100, struct.pack("<H", command)),
                (0x0120, struct.pack("<H", message_id)), (0x0800, struct.pack("<H", NO_DATA_SET)),
                (0x0900, struct.pack("<H", status))]  # fmt: skip
    if sop_instance is not None:
        elements.append((0x1000, _pad(sop_instance)))
    body = b"".join(struct.pack("<HHL", 0, tag, len(v)) + v for tag, v in elements)
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def p_data(context_id: int, control: int, data: bytes) -> bytes:
    pdv = struct.pack(">LBB", len(data) + 2, context_id, control) + data
    return pdu(P_DATA_TF, pdv)


# File Meta elements (PS3.10 7.1): VRs whose length field is 4 bytes after two reserved ones.
_LONG_LENGTH_VRS = (b"OB", b"UR")
_META_PREAMBLE = b"\x00" * 128 + b"DICM"


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "  # PS3.5 6.2: UIDs pad with NUL
    if vr in _LONG_LENGTH_VRS:
        return struct.pack("<HH2s2xL", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def file_meta(
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str,
    calling_ae: str,
    called_ae: str = "",
    peer_address: str = "",
) -> bytes:
    """Preamble, DICM and File Meta Information (PS3.10 7.1) for a received data set.

    Encoded by hand, explicit VR little endian as PS3.10 requires: it is written once per received
    instance, and building a pydicom dataset for it cost more than the rest of the receipt's
    bookkeeping. The unit tests hold it byte-equal to pydicom's ``write_file_meta_info``.
    """
    elements = [
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", sop_class.encode("ascii")),
        _meta_element(0x0003, b"UI", sop_instance.encode("ascii")),
        _meta_element(0x0010, b"UI", transfer_syntax.encode("ascii")),
        _meta_element(0x0012, b"UI", IMPLEMENTATION_CLASS_UID),
        _meta_element(0x0013, b"SH", IMPLEMENTATION_VERSION),
    ]
    # Who sent it, to whom, from where (PS3.10 7.1): the file carries the association's facts, so
    # a receipt whose database record was lost is recovered with them and routed as received.
    if calling_ae:
        calling = calling_ae.encode("ascii", "replace")
        elements.append(_meta_element(0x0016, b"AE", calling))  # Source Application Entity Title
        elements.append(_meta_element(0x0017, b"AE", calling))  # Sending Application Entity Title
    if called_ae:
        elements.append(_meta_element(0x0018, b"AE", called_ae.encode("ascii", "replace")))
    if peer_address:
        host = f"[{peer_address}]" if ":" in peer_address else peer_address
        elements.append(_meta_element(0x0027, b"UR", f"dicom://{host}".encode("ascii", "replace")))
    body = b"".join(elements)
    group_length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body))
    return _META_PREAMBLE + group_length + body


# -- the requestor's side --------------------------------------------------------------------

ASSOCIATE_AC_RESULT_ACCEPT = 0


def _ae_field(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16, b" ")


def build_associate_rq(
    calling_ae: str, called_ae: str, contexts: list[tuple[int, str, list[str]]]
) -> bytes:
    body = bytearray(struct.pack(">HH", 1, 0))
    body += _ae_field(called_ae) + _ae_field(calling_ae) + b"\x00" * 32
    body += item(0x10, APPLICATION_CONTEXT)
    for context_id, abstract, syntaxes in contexts:
        sub = item(0x30, abstract.encode("ascii"))
        sub += b"".join(item(0x40, ts.encode("ascii")) for ts in syntaxes)
        body += item(0x20, bytes([context_id, 0, 0, 0]) + sub)
    user = item(0x51, struct.pack(">L", MAX_PDU_LENGTH))
    user += item(0x52, IMPLEMENTATION_CLASS_UID)
    user += item(0x55, IMPLEMENTATION_VERSION)
    body += item(0x50, user)
    return pdu(ASSOCIATE_RQ, bytes(body))


@dataclass(frozen=True)
class AssociateAccept:
    results: dict[int, tuple[int, str]]  # context id -> (result, transfer syntax)
    peer_max_pdu: int


def parse_associate_ac(body: bytes) -> AssociateAccept:
    if len(body) < 68:
        raise ProtocolError("A-ASSOCIATE-AC too short")
    offset, results, peer_max = 68, {}, 0
    while offset + 4 <= len(body):
        item_type, _, length = struct.unpack_from(">BBH", body, offset)
        value = body[offset + 4 : offset + 4 + length]
        offset += 4 + length
        if item_type == 0x21 and length >= 4:
            syntax, sub = "", 4
            while sub + 4 <= len(value):
                sub_type, _, sub_length = struct.unpack_from(">BBH", value, sub)
                if sub_type == 0x40:
                    syntax = uid(value[sub + 4 : sub + 4 + sub_length])
                sub += 4 + sub_length
            results[value[0]] = (value[2], syntax)
        elif item_type == 0x50:
            sub = 0
            while sub + 4 <= len(value):
                sub_type, _, sub_length = struct.unpack_from(">BBH", value, sub)
                if sub_type == 0x51 and sub_length == 4:
                    (peer_max,) = struct.unpack_from(">L", value, sub + 4)
                sub += 4 + sub_length
    return AssociateAccept(results, peer_max)


def encode_command(elements: list[tuple[int, bytes]]) -> bytes:
    """A command set (group 0000, implicit VR little endian) with its group length first."""
    body = b"".join(
        struct.pack("<HHL", 0, tag, len(_pad(value))) + _pad(value)
        for tag, value in sorted(elements)
    )
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def us(value: int) -> bytes:
    return struct.pack("<H", value)
