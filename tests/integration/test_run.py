"""`dicom-gw run` as `make run` starts it: private PostgreSQL, every service, admin printed once."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from tests.conftest import free_port
from tests.dicom_data import ct_series
from tests.support import storescu, wait_for

ROOT = Path(__file__).parents[2]


def http(
    method: str, url: str, body: object = None, token: str | None = None
) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _nice_of(config: Path, command: str) -> int:
    """The nice value of the process of this gateway whose command line holds ``command``."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (proc / "stat").read_text()
        except (OSError, NotADirectoryError):
            continue
        if str(config) in cmdline and command in cmdline:
            return int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of /proc/<pid>/stat
    raise AssertionError(f"no process of this gateway runs {command!r}")


def test_run_starts_the_whole_gateway() -> None:
    # Under a directory the postgres user can traverse, as a checkout under /work or /srv is.
    tmp_path = Path(tempfile.mkdtemp(prefix="dicomgw-run-"))
    tmp_path.chmod(0o755)
    dicom_port, api_port = free_port(), free_port()
    config = tmp_path / "gateway.toml"
    template = (ROOT / "docs" / "examples" / "dev.toml").read_text()
    config.write_text(
        template.replace("@STATE@", str(tmp_path / "var"))
        .replace("@ROOT@", str(ROOT))
        .replace("port = 11112", f"port = {dicom_port}")
        .replace("port = 8080", f"port = {api_port}")
    )
    log = (tmp_path / "run.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "dicom_gw", "--config", str(config), "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{api_port}"
        wait_for(
            lambda: "password" in (tmp_path / "run.log").read_text(),
            timeout=90,
            what="the first-run admin password",
        )
        output = (tmp_path / "run.log").read_text()
        match = re.search(r"password (\S+) \(shown once", output)
        assert match, output[-2000:]
        password = match.group(1)
        assert (tmp_path / "var" / "secrets" / "admin-password").read_text().strip() == password

        def api_up() -> bool:
            try:
                return http("GET", f"{base}/healthz")[0] == 200
            except OSError:
                return False

        wait_for(api_up, timeout=60, what="the API")
        status, session = http(
            "POST", f"{base}/api/v1/auth/login", {"username": "admin", "password": password}
        )
        assert status == 200, session
        token = session["access_token"]  # type: ignore[index]

        files = ct_series(tmp_path / "ct", count=3, size=16)
        wait_for(
            lambda: storescu(dicom_port, *files).returncode == 0,
            timeout=60,
            what="the SCP to store a study",
        )

        def indexed() -> bool:
            code, page = http("GET", f"{base}/api/v1/studies", token=token)
            return code == 200 and page["total"] == 1  # type: ignore[index]

        wait_for(indexed, timeout=60, what="the study in the API")
        # Indexing yields the CPU to the receivers ([ingest] nice, 10 by default).
        assert _nice_of(config, "worker ingest") == 10
        assert _nice_of(config, "scp --receiver-index 0") == 0
        status, health = http("GET", f"{base}/api/v1/health", token=token)
        states = {c["name"]: c["status"] for c in health["components"]}  # type: ignore[index]
        assert states["database"] == states["migrations"] == states["storage"] == "ok"
        for service in ("scp", "ingest", "forward", "dbpool", "cleanup"):
            assert states[service] == "ok", (service, health)
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            exposition = response.read().decode()
        # Counters from the receiver processes (multiprocess mode) and gauges from the database.
        assert re.search(r"^dicomgw_received_instances_total 3\.0$", exposition, re.M), exposition
        assert "dicomgw_disk_used_percent" in exposition
        assert "dicomgw_ingest_jobs" in exposition
        status, ready = http("GET", f"{base}/readyz")
        assert status == 200 and ready["ready"] is True  # type: ignore[index]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=90)
    assert process.returncode == 0
    assert not (tmp_path / "var" / "postgres" / "data" / "postmaster.pid").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)
