"""Destinations for forwarding tests: dcmtk's storescp, and a pynetdicom SCP that can misbehave."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pynetdicom import AE, evt
from pynetdicom.sop_class import _STORAGE_CLASSES as STORAGE_CLASSES

from tests.support import dicom_env, wait_for


@dataclass
class StoreSCP:
    """dcmtk storescp in bit-preserving mode (+B): a real peer that keeps what it received."""

    ae_title: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreSCP:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["storescp", "-aet", self.ae_title, "+B", "-od", str(self.directory), str(self.port)],
            env=dicom_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.echo_ok, what=f"storescp {self.ae_title}")
        return self

    def echo_ok(self) -> bool:
        result = subprocess.run(
            ["echoscu", "-aec", self.ae_title, "127.0.0.1", str(self.port)],
            env=dicom_env(),
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()
        self.process = None

    def received(self) -> dict[str, Path]:
        """SOP Instance UID -> received file."""
        files: dict[str, Path] = {}
        for path in self.directory.iterdir():
            try:
                uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            except Exception:
                continue  # still being written
            files[uid] = path
        return files


@dataclass
class RecordingSCP:
    """A pynetdicom Storage SCP that records each instance with its association and can answer a
    failure status for chosen instances."""

    ae_title: str
    port: int
    fail: Callable[[pydicom.Dataset], int | None] = lambda ds: None
    received: list[tuple[int, str]] = field(default_factory=list)  # (association id, SOP UID)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: object | None = None

    def start(self) -> RecordingSCP:
        ae = AE(ae_title=self.ae_title)
        for uid in sorted(set(STORAGE_CLASSES.values())):
            ae.add_supported_context(uid, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        ae.add_supported_context("1.2.840.10008.1.1")

        def on_store(event: evt.Event) -> int:
            ds = event.dataset
            status = self.fail(ds)
            if status is not None:
                return status
            with self._lock:
                self.received.append((id(event.assoc), str(ds.SOPInstanceUID)))
            return 0x0000

        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_C_ECHO, lambda e: 0)],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
            self._server = None

    def uids(self) -> set[str]:
        with self._lock:
            return {uid for _, uid in self.received}
