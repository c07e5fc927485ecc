"""What the fault scenarios need around a gateway: its process tree, sinks that keep every copy,
a throwaway PostgreSQL cluster, a size-limited file system and a network namespace."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dicom_gw.db.cluster import LocalCluster
from dicom_gw.db.migrate import upgrade
from tests.conftest import Gateway, free_port
from tests.sinks import StoreSCP
from tests.support import dicom_env, wait_for

FAST_FORWARD = {
    "poll_interval_seconds": 0.5,
    "lease_seconds": 3,
    "acse_timeout_seconds": 3,
    "dimse_timeout_seconds": 5,
    "network_timeout_seconds": 3,
}
BACKOFF = ("--backoff-base-seconds", "0.2", "--backoff-cap-seconds", "1", "--max-retries", "200")


# -- processes ---------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z"


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc, whichever thread started them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat and stat[0] == pid and stat[1] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def service_args(pid: int) -> tuple[str, ...]:
    """The `dicom-gw` command a process runs: ('scp',), ('worker', 'ingest'), ('api',)..."""
    argv = cmdline(pid)
    if "--config" in argv:
        argv = argv[argv.index("--config") + 2 :]
    return tuple(argv)


def rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def receivers(scp_pid: int) -> list[int]:
    """The receiver processes under a `dicom-gw scp` parent."""
    return [pid for pid in children(scp_pid) if "--receiver-index" in cmdline(pid)]


def kill9(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class Supervised:
    """`dicom-gw run` on the test's database: every service in one supervised process tree."""

    SERVICES = (
        ("scp",),
        ("api",),
        ("worker", "ingest"),
        ("worker", "forward"),
        ("worker", "dbpool"),
    )

    def __init__(self, gw: Gateway, api_port: int) -> None:
        self.gw = gw
        self.api_port = api_port
        self.process = gw.start("run", "run")

    def service(self, *args: str) -> list[int]:
        return [p for p in children(self.process.pid) if service_args(p) == args]

    def one(self, *args: str) -> int:
        found = self.service(*args)
        assert len(found) == 1, (args, found, self.gw.log("run")[-3000:])
        return found[0]

    def api_ok(self) -> bool:
        return http_status(f"http://127.0.0.1:{self.api_port}/healthz") == 200

    def ready(self) -> bool:
        if any(len(self.service(*s)) != 1 for s in self.SERVICES):
            return False
        api_workers = children(self.one("api"))
        expected = self.gw.options.get("api", {}).get("workers", 2)
        scp_ok = len(receivers(self.one("scp"))) == 2 and self.gw.echo_ok()
        return scp_ok and len(api_workers) == expected and self.api_ok()


# -- sinks -------------------------------------------------------------------------------------


@dataclass
class CopySink(StoreSCP):
    """dcmtk storescp, bit-preserving, with a unique file per received copy (+uf), so a
    destination that got an instance twice shows two files; optionally inside a netns."""

    netns: str | None = None
    host: str = "127.0.0.1"

    def start(self) -> CopySink:
        self.directory.mkdir(parents=True, exist_ok=True)
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.process = subprocess.Popen(
            [
                *prefix,
                "storescp",
                "-aet",
                self.ae_title,
                "+B",
                "+uf",
                "-od",
                str(self.directory),
                str(self.port),
            ],
            env=dicom_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.echo_ok, what=f"storescp {self.ae_title}")
        return self

    def echo_ok(self) -> bool:
        result = subprocess.run(
            ["echoscu", "-to", "3", "-aec", self.ae_title, self.host, str(self.port)],
            env=dicom_env(),
            capture_output=True,
            check=False,
        )
        return result.returncode == 0


# -- a throwaway PostgreSQL cluster ------------------------------------------------------------


@contextlib.contextmanager
def throwaway_cluster(**conf: str) -> Iterator[tuple[LocalCluster, str]]:
    """A private cluster this test may stop, crash and start: the session's cluster stays
    untouched. ``conf`` adds postgresql.conf settings."""
    root = Path(tempfile.mkdtemp(prefix="dicomgw-rel-pg-", dir="/tmp"))
    root.chmod(0o755)  # PostgreSQL runs as `postgres`: it must reach the cluster directory
    cluster = LocalCluster(root / "cluster", port=free_port(), database="dicom_gw")
    cluster.init()
    if conf:
        with (cluster.data_dir / "postgresql.conf").open("a") as f:
            f.writelines(f"{key} = {value}\n" for key, value in conf.items())
    cluster.start()
    try:
        upgrade(cluster.url())
        yield cluster, cluster.url().render_as_string()
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def crash(cluster: LocalCluster) -> None:
    """Stop PostgreSQL the way a crash does: no checkpoint, WAL not yet written is gone."""
    cluster._run("pg_ctl", "-D", str(cluster.data_dir), "-m", "immediate", "-w", "stop")


# -- a size-limited file system ----------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        import pytest

        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


# -- a network namespace -----------------------------------------------------------------------


@dataclass
class NetNs:
    """A namespace joined to this one by a veth pair: ``host_ip`` here, ``ns_ip`` inside. The
    addresses exist only on the pair; nothing is routed anywhere else."""

    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    firewall: str = ""
    rules: list[list[str]] = field(default_factory=list)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *args], capture_output=True, text=True, check=check
        )

    def cut(self) -> None:
        """Drop every packet arriving in the namespace: a silent cut, so connects time out."""
        if self.firewall == "nft":
            self.run("nft", "add table inet cut")
            self.run("nft", "add chain inet cut input { type filter hook input priority 0 ; }")
            self.run("nft", "add rule inet cut input drop")
        else:
            self.run("iptables", "-w", "-I", "INPUT", "-j", "DROP")

    def restore(self) -> None:
        if self.firewall == "nft":
            self.run("nft", "delete table inet cut", check=False)
        else:
            self.run("iptables", "-w", "-D", "INPUT", "-j", "DROP", check=False)


def _sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


@contextlib.contextmanager
def network_namespace() -> Iterator[NetNs]:
    import pytest

    firewall = "nft" if shutil.which("nft") else "iptables" if shutil.which("iptables") else ""
    if not firewall:
        pytest.skip("neither nft nor iptables is installed (Debian: nftables)")
    tag = f"{os.getpid() % 10000}"
    name, host_if, ns_if = f"dgwrel{tag}", f"dgwh{tag}", f"dgwn{tag}"
    octet = 1 + os.getpid() % 250
    host_ip, ns_ip = f"10.253.{octet}.1", f"10.253.{octet}.2"
    made = _sh("ip", "netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        steps = [
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
            ["ip", "link", "set", ns_if, "netns", name],
            ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
            ["ip", "link", "set", host_if, "up"],
            ["ip", "netns", "exec", name, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if],
            ["ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up"],
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
        ]
        for step in steps:
            result = _sh(*step)
            if result.returncode != 0:
                pytest.skip(f"cannot set up the veth pair: {' '.join(step)}: {result.stderr}")
        ns = NetNs(name, host_if, ns_if, host_ip, ns_ip, firewall)
        probe = ns.run(firewall, *(["list", "ruleset"] if firewall == "nft" else ["-L"]),
                       check=False)  # fmt: skip
        if probe.returncode != 0:
            pytest.skip(f"{firewall} does not work in a namespace here: {probe.stderr.strip()}")
        yield ns
    finally:
        _sh("ip", "link", "del", host_if)
        _sh("ip", "netns", "del", name)


# -- HTTP --------------------------------------------------------------------------------------


def http_status(url: str, timeout: float = 3) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0
