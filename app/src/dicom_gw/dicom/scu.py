"""The C-STORE / C-ECHO SCU: send stored files to a destination exactly as they were received.

Each file goes out as its stored data set bytes, streamed from disk
(``STORE_SEND_CHUNKED_DATASET``), never decoded and re-encoded. For each instance we propose its
SOP class with only its own stored transfer syntax: if the destination will not take that
syntax, the send fails with that reason instead of the data being transcoded behind anyone's back.

Failures are classified, because what to do next depends on the cause: a refused connection or a
rejected association says nothing about the instance (retry later), a failure status is the
destination's verdict on it (retry, then dead-letter), a missing file or a changed hash is ours
(never retried: flagged for an operator).
"""

from __future__ import annotations

import enum
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pynetdicom import AE, _config
from pynetdicom.association import Association

from dicom_gw.dicom.tls import client_context

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1-255
WARNING_STATUSES = {0x0001, 0xB000, 0xB006, 0xB007}

_config.STORE_SEND_CHUNKED_DATASET = True


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


def _probe(host: str, port: int, timeout: float) -> AssociationFailed:
    """Classify why an association could not be opened, with one plain TCP connect."""
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 10)):
            pass
    except ConnectionRefusedError:
        return AssociationFailed(FailureKind.CONNECTION_REFUSED, f"{host}:{port}")
    except TimeoutError:
        return AssociationFailed(FailureKind.CONNECTION_TIMEOUT, f"{host}:{port}")
    except OSError as exc:
        return AssociationFailed(FailureKind.NETWORK, f"{host}:{port}: {exc.strerror or exc}")
    return AssociationFailed(FailureKind.ABORTED, "the peer closed the association request")


def _tls_args(peer: Peer) -> tuple[Any, str] | None:
    if not peer.tls_enabled:
        return None
    context = client_context(
        Path(peer.tls_ca_file) if peer.tls_ca_file else None,
        Path(peer.tls_cert_file) if peer.tls_cert_file else None,
        Path(peer.tls_key_file) if peer.tls_key_file else None,
    )
    return context, peer.host


def open_association(
    peer: Peer, contexts: list[tuple[str, str]], timeouts: Timeouts
) -> Association:
    """Associate proposing one (SOP class, transfer syntax) pair per presentation context."""
    ae = AE(ae_title=peer.calling_ae_title)
    ae.acse_timeout = timeouts.acse
    ae.dimse_timeout = timeouts.dimse
    ae.network_timeout = timeouts.network
    for sop_class, transfer_syntax in contexts[:MAX_CONTEXTS]:
        ae.add_requested_context(sop_class, transfer_syntax)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=_tls_args(peer))
    if assoc.is_established:
        sock = assoc.dul.socket.socket if assoc.dul.socket else None
        if sock is not None:
            # Nagle plus delayed ACK would stall each small PDU ~40 ms on a low-latency link.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return assoc
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        detail = (
            f"result 0x{rsp.result:02X} source 0x{rsp.result_source:02X}"
            f" reason 0x{rsp.diagnostic:02X}"
            if rsp is not None and rsp.result is not None
            else "no details"
        )
        raise AssociationFailed(FailureKind.REJECTED, detail)
    raise _probe(peer.host, peer.port, timeouts.network)


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


def send_file(assoc: Association, path: Path, sop_class: str, transfer_syntax: str) -> StoreResult:
    """C-STORE one stored file over an open association; never raises for a peer's answer."""
    accepted = {
        (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
    }
    if (sop_class, transfer_syntax) not in accepted:
        return StoreResult(
            None, FailureKind.SYNTAX_NOT_ACCEPTED, f"{transfer_syntax} for {sop_class}"
        )
    response = assoc.send_c_store(path)
    if "Status" not in response:
        return StoreResult(None, FailureKind.NO_RESPONSE, "association aborted or DIMSE timeout")
    status = int(response.Status)
    if status == 0x0000 or status in WARNING_STATUSES or 0xB000 <= status <= 0xBFFF:
        return StoreResult(status)
    comment = str(response.get("ErrorComment", "")).strip()
    return StoreResult(
        status, FailureKind.FAILURE_STATUS, f"0x{status:04X}" + (f" {comment}" if comment else "")
    )


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
            peer, [(VERIFICATION_SOP_CLASS, "1.2.840.10008.1.2")], timeouts or Timeouts()
        )
    except AssociationFailed as exc:
        return EchoResult(False, None, (time.perf_counter() - started) * 1000, str(exc))
    try:
        response = assoc.send_c_echo()
    finally:
        assoc.release()
    elapsed = (time.perf_counter() - started) * 1000
    if "Status" not in response:
        return EchoResult(False, None, elapsed, "no response to C-ECHO")
    status = int(response.Status)
    return EchoResult(status == 0, status, elapsed, "success" if status == 0 else f"0x{status:04X}")
