"""TLS contexts for DICOM per PS3.15 Annex B.12, the BCP 195 (RFC 8996, RFC 9325) profile.

TLS 1.2 is the floor and 1.3 is negotiated whenever the peer offers it; 1.2 is limited to ECDHE
AEAD suites (forward secrecy; finite-field DHE is on its way out of BCP 195).
"""

from __future__ import annotations

import ssl
from pathlib import Path

BCP195_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def server_context(
    certificate: Path, private_key: Path, ca_certificate: Path | None, require_client_cert: bool
) -> ssl.SSLContext:
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.load_cert_chain(certificate, private_key)
    if ca_certificate is not None:
        context.load_verify_locations(ca_certificate)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(
    ca_certificate: Path | None, certificate: Path | None, private_key: Path | None
) -> ssl.SSLContext:
    context = _harden(ssl.create_default_context(cafile=ca_certificate))
    # DICOM peers are addressed by IP at many sites; the CA pin is the identity check there.
    context.check_hostname = False
    if certificate is not None and private_key is not None:
        context.load_cert_chain(certificate, private_key)
    return context
