"""Helpers shared by the tests: waiting on conditions, dcmtk invocation, DICOM file anatomy."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pydicom.filereader import _read_file_meta_info, read_preamble


def wait_for(condition: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    """Poll a condition until it holds; fail with what we waited for. Never a bare sleep."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def dicom_env() -> dict[str, str]:
    """dcmtk stalls ~40 ms per message on loopback without TCP_NODELAY (Nagle + delayed ACK)."""
    return {**os.environ, "TCP_NODELAY": "1"}


def storescu(
    port: int,
    *files: Path,
    calling: str = "STORESCU",
    called: str = "DICOM_GW",
    extra: tuple[str, ...] = (),
    propose: str = "-R",
) -> subprocess.CompletedProcess[str]:
    """Send files in one association, proposing each file's own transfer syntax (-R); for RLE
    files dcmtk needs -xr instead (with -R it picks an uncompressed context and fails)."""
    return subprocess.run(
        [
            "storescu",
            "-aet",
            calling,
            "-aec",
            called,
            propose,
            *extra,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        env=dicom_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def dataset_offset(path: Path) -> int:
    """Where the data set starts in a Part 10 file: after preamble, DICM and File Meta."""
    with path.open("rb") as fp:
        read_preamble(fp, False)
        _read_file_meta_info(fp)
        return fp.tell()


def dataset_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[dataset_offset(path) :]


class CuttingProxy:
    """A TCP proxy that forwards a connection until `cut_after` bytes went upstream, then drops
    both sides: a sender that vanishes mid-data set, at a byte count the test chooses."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        import socket
        import threading

        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.forwarded = 0
        self.cut = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import socket
        import threading

        client, _ = self._listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))

        def back() -> None:
            try:
                while data := upstream.recv(65536):
                    client.sendall(data)
            except OSError:
                pass

        threading.Thread(target=back, daemon=True).start()
        try:
            while self.forwarded < self.cut_after and (data := client.recv(65536)):
                allowed = data[: self.cut_after - self.forwarded]
                upstream.sendall(allowed)
                self.forwarded += len(allowed)
        except OSError:
            pass
        for sock in (upstream, client):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._listener.close()
        self.cut.set()
