"""A small process supervisor for `dicom-gw run` and the SCP's receiver processes.

Children are started as separate processes of this same program, restarted with backoff when
they die, and stopped with SIGTERM (then SIGKILL after a grace period). Each child asks the
kernel to send it SIGTERM if the supervisor itself dies, so a killed supervisor never leaves
receivers holding the DICOM port.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def self_command(config: Path | None, *args: str) -> list[str]:
    """The argv that runs another `dicom-gw` command with the same interpreter and config."""
    argv = [sys.executable, "-m", "dicom_gw"]
    if config is not None:
        argv += ["--config", str(config)]
    return [*argv, *args]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    failures: int = 0
    start_after: float = 0.0

    def start(self) -> None:
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(self.argv, env=env, preexec_fn=_die_with_parent)
        log.info("started %s", self.name, extra={"pid": self.process.pid})


class Supervisor:
    def __init__(self, children: list[Child], grace_seconds: float = 30.0) -> None:
        self.children = children
        self.grace_seconds = grace_seconds
        self.stopping = threading.Event()

    def request_stop(self, *_: object) -> None:
        self.stopping.set()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        for child in self.children:
            child.start()
        while not self.stopping.wait(0.2):
            now = time.monotonic()
            for child in self.children:
                if child.process is None:
                    if now >= child.start_after:
                        child.start()
                    continue
                code = child.process.poll()
                if code is None:
                    continue
                child.failures += 1
                delay = min(2.0 ** min(child.failures, 5), 30.0)
                log.error("%s exited with %s; restarting in %.0fs", child.name, code, delay)
                child.process = None
                child.start_after = now + delay
        self.stop_all()

    def stop_all(self) -> None:
        running = [c for c in self.children if c.process and c.process.poll() is None]
        for child in running:
            assert child.process is not None
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("%s did not stop in time; killing it", child.name)
                child.process.kill()
                child.process.wait()
