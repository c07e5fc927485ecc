"""DICOM over TLS (PS3.15 BCP 195): TLS 1.2+ only, client certificates when required."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE

from tests.conftest import Gateway, free_port
from tests.dicom_data import ct_series
from tests.support import wait_for


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_gateway(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> tuple[Gateway, Path, Path, Path]:
    server_cert, server_key = make_cert(tmp_path, "gateway")
    client_cert, client_key = make_cert(tmp_path, "modality")
    gw = make_gateway(
        dicom={
            "tls": {
                "enabled": True,
                "port": free_port(),
                "certificate": str(server_cert),
                "private_key": str(server_key),
                "ca_certificate": str(client_cert),
                "require_client_certificate": True,
            }
        }
    )
    gw.start_scp()
    gw.start_ingest()
    return gw, server_cert, client_cert, client_key


def client(
    server_cert: Path, cert: Path | None, key: Path | None, maximum: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server_cert))
    context.check_hostname = False
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
    if cert and key:
        context.load_cert_chain(cert, key)
    return context


def associate(gw: Gateway, context: ssl.SSLContext) -> object:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    port = gw.options["dicom"]["tls"]["port"]
    return ae.associate("127.0.0.1", port, ae_title="DICOM_GW", tls_args=(context, None))


def test_store_over_tls_with_a_client_certificate(
    tls_gateway: tuple[Gateway, Path, Path, Path], tmp_path: Path
) -> None:
    gw, server_cert, client_cert, client_key = tls_gateway
    assoc = associate(gw, client(server_cert, client_cert, client_key))
    assert assoc.is_established  # type: ignore[attr-defined]
    assert assoc.dul.socket.socket.version() == "TLSv1.3"  # type: ignore[attr-defined]
    [source] = ct_series(tmp_path / "ct", count=1, size=16)
    status = assoc.send_c_store(source)  # type: ignore[attr-defined]
    assoc.release()  # type: ignore[attr-defined]
    assert status.Status == 0
    gw.wait_indexed(1)


def established(gw: Gateway, context: ssl.SSLContext) -> bool:
    assoc = associate(gw, context)
    ok = bool(assoc.is_established)  # type: ignore[attr-defined]
    if ok:
        assoc.release()  # type: ignore[attr-defined]
    return ok


def test_tls_refuses_old_protocols_and_missing_client_certificates(
    tls_gateway: tuple[Gateway, Path, Path, Path],
) -> None:
    gw, server_cert, client_cert, client_key = tls_gateway
    assert not established(gw, client(server_cert, None, None))
    old = client(server_cert, client_cert, client_key, maximum=ssl.TLSVersion.TLSv1_1)
    old.set_ciphers("ALL:@SECLEVEL=0")
    assert not established(gw, old)
    # A silent client on the TLS port does not stop the receiver from accepting others.
    import socket

    port = gw.options["dicom"]["tls"]["port"]
    with socket.create_connection(("127.0.0.1", port)):
        wait_for(
            lambda: established(gw, client(server_cert, client_cert, client_key)),
            timeout=20,
            what="a TLS association while another client is silent",
        )
