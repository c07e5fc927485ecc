"""The systems under test, each started on free loopback ports in its own temporary directory.

- ``StoreSCP``: dcmtk ``storescp`` writing bit-preserving files (``+B``), all transfer syntaxes.
  It does not fsync: it is the practical limit for a receiver on the machine, not a peer.
- ``Orthanc``: Debian's ``orthanc`` package run directly with a temporary JSON configuration:
  SQLite index, storage in the temporary directory, ``SyncStorageArea`` on, no plugins, no
  authentication, loopback only. With ``relay_to`` it is the Orthanc relay: a Lua
  ``OnStoredInstance`` sends every stored instance to a modality (the sink).
- ``Gateway``: ``dicom-gw --config <toml> run`` from the project's venv, with a private
  PostgreSQL cluster under its state directory, durability as shipped.
- ``Sink``: a ``StoreSCP`` that also reports when each file is complete (inotify
  ``IN_CLOSE_WRITE``), for the forwarding scenarios.

Readiness is a condition, never a sleep: ``echoscu`` to the system's AE title succeeds (and the
process is still alive). ``ProcessMonitor`` samples the server's process tree in /proc for CPU
seconds and resident memory. Every dcmtk tool (and Orthanc, which uses dcmtk's network layer)
runs with ``TCP_NODELAY=1`` in its environment: without it dcmtk stalls ~40 ms per message on
loopback (Nagle and delayed ACK; see docs/performance.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORK_DIR = REPO_ROOT / "var" / "bench" / "tmp"
DEFAULT_GATEWAY = REPO_ROOT / ".venv" / "bin" / "dicom-gw"
CALLING_AE = "BENCHSCU"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# A log4cplus configuration for dcmtk tools: INFO messages with epoch seconds and fractional
# milliseconds, so the harness can time each C-STORE request/response from storescu's log.
DCMTK_LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%s %Q} %m%n
"""


class BenchSystemError(RuntimeError):
    """A system failed to start, stop or answer."""


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def echo_ok(ae_title: str, port: int, timeout: float = 5.0) -> bool:
    try:
        result = subprocess.run(
            [
                "echoscu",
                "-to",
                "5",
                "-ta",
                "5",
                "-aet",
                CALLING_AE,
                "-aec",
                ae_title,
                "127.0.0.1",
                str(port),
            ],
            env=dcmtk_env(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on `port` (several with SO_REUSEPORT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fp:
            next(fp)
            for line in fp:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def _tail(path: Path | None, lines: int = 25) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def command_version(argv: list[str], pattern: str = r"\d+\.\d+(\.\d+)?") -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    found = re.search(pattern, out.stdout + out.stderr)
    return found.group(0) if found else "unknown"


# --------------------------------------------------------------------------------------------
# /proc sampling


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fp:
                stat = fp.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(roots: set[int]) -> set[int]:
    children = _children_map()
    found: set[int] = set()
    stack = [pid for pid in roots if os.path.exists(f"/proc/{pid}")]
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, ()))
    return found


def pids_mentioning(text: str) -> set[int]:
    """Processes whose command line contains `text` (e.g. a postmaster started with -D <dir>)."""
    needle = text.encode()
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fp:
                if needle in fp.read():
                    found.add(int(entry.name))
        except OSError:
            continue
    return found


def _cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fp:
            stat = fp.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


def _memory_kb(pid: int) -> tuple[int, int, int] | None:
    """(VmRSS, VmHWM, Pss) in kB; Pss counts shared pages once over the processes sharing them."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fp:
            status = fp.read()
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fp:
            rollup = fp.read()
    except OSError:
        return None
    rss = re.search(rb"VmRSS:\s+(\d+)", status)
    hwm = re.search(rb"VmHWM:\s+(\d+)", status)
    pss = re.search(rb"\nPss:\s+(\d+)", rollup)
    if rss is None or hwm is None:
        return None  # a zombie or kernel thread
    return (
        int(rss.group(1)),
        int(hwm.group(1)),
        int(pss.group(1)) if pss else int(rss.group(1)),
    )


@dataclass
class Usage:
    cpu_seconds: float
    peak_tree_pss_mb: float  # the largest sum of PSS over the tree seen in one sample
    peak_process_rss_mb: float  # the largest single process' peak RSS (kernel high-water mark)
    processes: int


class ProcessMonitor:
    """CPU seconds and peak resident memory of a process tree while a scenario runs.

    The tree is every descendant of the system's root processes, recomputed at each sample
    (every `interval` s). CPU is utime+stime per process, last sample minus first sample, summed
    (a process that exits between samples loses its last interval). Peak RSS per process is the
    kernel's high-water mark (VmHWM), reset at start through /proc/<pid>/clear_refs where
    permitted; the tree peak is the largest sampled sum of PSS (shared pages divided among the
    processes that share them, so PostgreSQL's shared buffers count once).
    """

    def __init__(self, roots: set[int], interval: float = 0.2) -> None:
        self.roots = roots
        self.interval = interval
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.hwm_kb: dict[int, int] = {}
        self.peak_tree_kb = 0
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, initial: bool = False) -> None:
        tree = descendants(self.roots)
        total_pss = 0
        for pid in tree:
            ticks = _cpu_ticks(pid)
            mem = _memory_kb(pid)
            if ticks is not None:
                if initial:
                    self.first[pid] = ticks
                else:
                    self.first.setdefault(pid, 0)  # born during the run
                self.last[pid] = ticks
            if mem is not None:
                total_pss += mem[2]
                self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), mem[1], mem[0])
        self.seen |= tree
        self.peak_tree_kb = max(self.peak_tree_kb, total_pss)

    def start(self) -> None:
        for pid in descendants(self.roots):
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to VmRSS
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._run, name="procmon", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def cpu_seconds(self) -> float:
        """CPU of the tree from start until now (a fresh sample; the monitor keeps running)."""
        self._sample()
        return sum(self.last[pid] - self.first.get(pid, 0) for pid in self.last) / CLK_TCK

    def stop(self) -> Usage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return Usage(
            cpu_seconds=self.cpu_seconds(),
            peak_tree_pss_mb=self.peak_tree_kb / 1024,
            peak_process_rss_mb=max(self.hwm_kb.values(), default=0) / 1024,
            processes=len(self.seen),
        )


# --------------------------------------------------------------------------------------------
# Systems


@dataclass
class Server:
    """A DICOM receiver started by the benchmark. Subclasses fill in the command."""

    work_root: Path = DEFAULT_WORK_DIR
    ae_title: str = "BENCH"
    name: str = "server"
    port: int = 0
    workdir: Path = field(default=Path())
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    ready_timeout: float = 60.0

    # ---- to override
    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write configuration files into self.workdir before the process starts."""

    def environment(self) -> dict[str, str]:
        return dcmtk_env()

    def stored_count(self) -> int:
        raise NotImplementedError

    def cleanup_after_stop(self) -> None:
        """Stop anything the system left behind (e.g. a daemonised database)."""

    # ---- common
    def start(self) -> None:
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.work_root))
        self.workdir.chmod(0o755)
        self.port = self.port or free_port()
        self.prepare()
        self.log_path = self.workdir / "server.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self.process.poll() is not None:
                raise BenchSystemError(
                    f"{self.name} exited with {self.process.returncode} before it was ready:\n"
                    + _tail(self.log_path)
                )
            if echo_ok(self.ae_title, self.port):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise BenchSystemError(
                    f"{self.name} not ready after {self.ready_timeout}s:\n" + _tail(self.log_path)
                )
            # Wait for the process to exit or a short while before probing again.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0.1)

    def root_pids(self) -> set[int]:
        assert self.process is not None
        return {self.process.pid} | pids_mentioning(str(self.workdir))

    def stop(self, timeout: float = 60.0) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the session we started, by its id
                proc.wait()
        self.cleanup_after_stop()

    def remove(self) -> None:
        if self.workdir and self.workdir != Path() and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.remove()


@dataclass
class StoreSCP(Server):
    name: str = "storescp"
    ae_title: str = "STORESCP"
    log_timestamps: bool = False

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    def prepare(self) -> None:
        self.storage.mkdir()
        if self.log_timestamps:
            (self.workdir / "log.cfg").write_text(DCMTK_LOG_CONFIG)

    def command(self) -> list[str]:
        argv = [
            "storescp",
            "-aet",
            self.ae_title,
            "+B",
            "+xa",
            "-dhl",
            "-od",
            str(self.storage),
        ]
        if self.log_timestamps:
            argv += ["-lc", str(self.workdir / "log.cfg")]
        return [*argv, str(self.port)]

    def stored_count(self) -> int:
        return sum(1 for _ in os.scandir(self.storage))

    @staticmethod
    def version() -> str:
        return command_version(["storescp", "--version"])


@dataclass
class Orthanc(Server):
    """Orthanc with SQLite and synchronous storage; a relay when relay_to is given."""

    name: str = "orthanc"
    ae_title: str = "ORTHANC"
    http_port: int = 0
    relay_to: tuple[str, str, int] | None = None  # (AE title, host, port) of the sink
    binary: str = "Orthanc"

    def prepare(self) -> None:
        self.http_port = self.http_port or free_port()
        (self.workdir / "storage").mkdir()
        (self.workdir / "index").mkdir()
        config: dict[str, object] = {
            "Name": f"bench-{self.name}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "StorageCompression": False,
            "SyncStorageArea": True,
            "Plugins": [],
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.port,
            "DicomCheckCalledAet": True,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SaveJobs": False,
        }
        if self.relay_to is not None:
            ae, host, port = self.relay_to
            config["DicomModalities"] = {"sink": [ae, host, port]}
            script = self.workdir / "relay.lua"
            script.write_text(
                "function OnStoredInstance(instanceId, tags, metadata, origin)\n"
                "   SendToModality(instanceId, 'sink')\n"
                "end\n"
            )
            config["LuaScripts"] = [str(script)]
        (self.workdir / "orthanc.json").write_text(json.dumps(config, indent=2))

    def command(self) -> list[str]:
        return [self.binary, str(self.workdir / "orthanc.json")]

    def stop(self, timeout: float = 0.5) -> None:
        """Orthanc's orderly shutdown polls its threads for about 3 s; the benchmark throws its
        data away, so it gets `timeout` seconds after SIGTERM, then SIGKILL."""
        super().stop(timeout)

    def stored_count(self) -> int:
        url = f"http://127.0.0.1:{self.http_port}/statistics"
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(json.load(response)["CountInstances"])

    @staticmethod
    def version() -> str:
        return command_version(["Orthanc", "--version"])

    @staticmethod
    def ensure_installed() -> None:
        if shutil.which("Orthanc") is None:
            subprocess.run(["apt-get", "install", "-y", "orthanc"], check=True)


@dataclass
class Gateway(Server):
    """`dicom-gw --config <toml> run` with its private PostgreSQL cluster under the workdir."""

    name: str = "gateway"
    ae_title: str = "DICOM_GW"
    binary: Path = DEFAULT_GATEWAY
    processes: int = 0  # 0: the gateway's default (one receiver per core)
    api_port: int = 0
    ready_timeout: float = 180.0
    listener_grace: float = 15.0
    # A state dir from an earlier start and clean stop of the gateway (its private cluster
    # initialised and migrated, no data), copied in before the start: `run` then starts the
    # cluster it finds, as on an appliance's second start, instead of running initdb each time.
    template: Path | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "gateway.toml"

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    def prepare(self) -> None:
        self.api_port = self.api_port or free_port()
        self.storage.mkdir()  # as a package install would have it
        if self.template is not None:
            # cp -a keeps the cluster's owner (postgres) and modes.
            subprocess.run(["cp", "-a", str(self.template), str(self.state_dir)], check=True)
        else:
            self.state_dir.mkdir()
        self.state_dir.chmod(0o755)
        self.config_path.write_text(
            "# written by tests/perf/systems.py for one benchmark run\n"
            "[dicom]\n"
            f'ae_title = "{self.ae_title}"\n'
            'bind_address = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f"processes = {self.processes}\n"
            "allow_any_caller = true\n"
            "\n[storage]\n"
            f'root = "{self.storage}"\n'
            "\n[database]\n"
            'url = ""\n'
            "\n[api]\n"
            f"port = {self.api_port}\n"
            "\n[security]\n"
            f'phi_key_file = "{self.state_dir / "secrets" / "phi.key"}"\n'
            "\n[logging]\n"
            'format = "text"\n'
            "\n[run]\n"
            f'state_dir = "{self.state_dir}"\n'
        )

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in dcmtk_env().items() if not k.startswith("DICOM_GW_")}
        env["DICOM_GW_CONFIG"] = str(self.config_path)
        return env

    def command(self) -> list[str]:
        return [str(self.binary), "--config", str(self.config_path), "run"]

    def wait_ready(self) -> None:
        """echoscu succeeds, then every receiver process listens (SO_REUSEPORT sockets).

        The second condition is bounded: a gateway that shares the port differently (one
        listening socket) is taken as ready after `listener_grace` seconds.
        """
        super().wait_ready()
        expected = self.processes or (os.cpu_count() or 1)
        deadline = time.monotonic() + self.listener_grace
        assert self.process is not None
        while listening_sockets(self.port) < expected and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0.05)
            if self.process.poll() is not None:
                raise BenchSystemError(f"{self.name} exited:\n" + _tail(self.log_path))

    def stored_count(self) -> int:
        """Files stored under the storage root, outside its temporary and quarantine folders."""
        count = 0
        for top, dirs, files in os.walk(self.storage):
            if Path(top) == self.storage:
                dirs[:] = [d for d in dirs if d not in ("tmp", "quarantine")]
            count += len(files)
        return count

    def stopped_cleanly(self) -> bool:
        """No PostgreSQL left running (or crashed) in the state dir."""
        return not any(self.state_dir.glob("**/postmaster.pid"))

    def cleanup_after_stop(self) -> None:
        # `run` stops its cluster on the way out; if it was killed, stop the postmaster here.
        for pid_file in self.state_dir.glob("**/postmaster.pid"):
            data_dir = pid_file.parent
            pg_ctl = _pg_ctl()
            if pg_ctl is None:
                continue
            argv = [pg_ctl, "-D", str(data_dir), "-m", "immediate", "-w", "stop"]
            if os.geteuid() == 0:
                argv = ["runuser", "-u", "postgres", "--", *argv]
            subprocess.run(argv, capture_output=True, check=False, timeout=60)

    def help_text(self) -> str:
        return gateway_help(self.binary)

    def private_database_url(self) -> str:
        """The URL of the private cluster `run` starts under its state dir (Unix socket only)."""
        socket_dir = quote(str(self.state_dir / "postgres" / "socket"), safe="")
        return f"postgresql+psycopg://postgres@/dicom_gw?host={socket_dir}&port=5432"

    def psql(self, sql: str, variables: dict[str, str] | None = None) -> str:
        """Run SQL against the private cluster (Unix socket, trust); unaligned output."""
        binary = shutil.which("psql")
        if binary is None:
            raise BenchSystemError("psql not found (Debian's postgresql-client)")
        socket_dir = str(self.state_dir / "postgres" / "socket")
        argv = [binary, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", socket_dir]
        argv += ["-p", "5432", "-U", "postgres", "-d", "dicom_gw"]
        # Variables (the PHI key among them) go in on stdin, not on the command line (/proc).
        preamble = "".join(f"\\set {key} '{value}'\n" for key, value in (variables or {}).items())
        result = subprocess.run(
            argv, input=preamble + sql, capture_output=True, text=True, timeout=3600, check=False
        )
        if result.returncode != 0:
            raise BenchSystemError(f"psql failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def wait_indexed(self, count: int, timeout: float) -> float:
        """Wait until `count` instances are indexed; returns the wall-clock time (epoch s) then.

        The gateway answers a C-STORE once the file and its ingest job are durable; indexing
        (the instances row) follows in the ingest worker. Polled every 0.2 s.
        """
        deadline = time.monotonic() + timeout
        while True:
            indexed = int(self.psql("SELECT count(*) FROM instances;").strip() or 0)
            if indexed >= count:
                return time.time()
            if time.monotonic() > deadline:
                raise BenchSystemError(f"only {indexed}/{count} indexed after {timeout:.0f}s")
            time.sleep(0.2)

    def phi_key_hex(self) -> str:
        """The PHI key `run` created (hex): the API benchmark encrypts its rows with it."""
        return (self.state_dir / "secrets" / "phi.key").read_text().strip()

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Another `dicom-gw` command against this running gateway (its config and database)."""
        env = {
            **self.environment(),
            "DICOM_GW_DATABASE__URL": self.private_database_url(),
        }
        argv = [str(self.binary), "--config", str(self.config_path), *args]
        return subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )

    def available(self) -> str | None:
        """None when the gateway can be benchmarked, else the reason it cannot."""
        if not self.binary.exists():
            return f"{self.binary} does not exist (run `make venv`)"
        if " run " not in f" {self.help_text()} ":
            return f"{self.binary} has no `run` command"
        return None

    def version(self) -> str:
        python = self.binary.parent / "python"
        code = (
            "import importlib.metadata as m, sys; "
            "print(m.version('dicom-gw'), m.version('pynetdicom'), m.version('pydicom'), "
            "sys.version.split()[0])"
        )
        try:
            out = subprocess.run(
                [str(python), "-c", code],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout.split()
            return f"dicom-gw {out[0]}, pynetdicom {out[1]}, pydicom {out[2]}, Python {out[3]}"
        except (OSError, subprocess.SubprocessError, IndexError):
            return "unknown"


def gateway_help(binary: Path) -> str:
    try:
        out = subprocess.run(
            [str(binary), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "COLUMNS": "200"},
        )
    except OSError:
        return ""
    return out.stdout + out.stderr


def _pg_ctl() -> str | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return str(candidates[0]) if candidates else shutil.which("pg_ctl")


# --------------------------------------------------------------------------------------------
# Forwarding: the sink and how each forwarder is pointed at it

IN_CLOSE_WRITE = 0x00000008
_EVENT = struct.Struct("iIII")


class ArrivalWatcher:
    """Counts files closed after writing in a directory (inotify IN_CLOSE_WRITE), with times.

    storescp writes each received object straight into its final file, so a file's presence
    does not mean it is complete; its close does.
    """

    def __init__(self, directory: Path) -> None:
        self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        wd = self._libc.inotify_add_watch(self.fd, str(directory).encode(), IN_CLOSE_WRITE)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
        self.count = 0
        self.first_time: float | None = None
        self.last_time: float | None = None

    def poll(self, timeout: float) -> int:
        """Wait up to `timeout` for events; returns the count of completed files so far."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return self.count
        now = time.time()
        with contextlib.suppress(BlockingIOError):
            while True:
                data = os.read(self.fd, 65536)
                offset = 0
                while offset < len(data):
                    _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                    offset += _EVENT.size + length
                    if mask & IN_CLOSE_WRITE:
                        self.count += 1
                        self.first_time = self.first_time or now
                        self.last_time = now
        return self.count

    def wait_for(self, expected: int, stall_timeout: float) -> bool:
        """Until `expected` files are complete; False if none arrives for `stall_timeout` s."""
        last_progress = time.monotonic()
        seen = self.count
        while self.count < expected:
            self.poll(0.5)
            if self.count != seen:
                seen, last_progress = self.count, time.monotonic()
            elif time.monotonic() - last_progress > stall_timeout:
                return False
        return True

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Sink(StoreSCP):
    name: str = "sink"
    ae_title: str = "SINK"
    watcher: ArrivalWatcher | None = None

    def prepare(self) -> None:
        super().prepare()
        self.watcher = ArrivalWatcher(self.storage)

    def stop(self, timeout: float = 60.0) -> None:
        super().stop(timeout)
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None


def configure_gateway_forwarding(gateway: Gateway, sink: Sink) -> str | None:
    """Point the running gateway at the sink: one destination and a rule routing everything to it.

    Returns None when configured, else the reason the gateway forward scenario is skipped: no
    `dicom-gw destination` command yet, or a CLI call that failed (adapt the calls here when the
    CLI changes). The destination keeps the gateway's shipped defaults (mode, associations, batch).
    """
    if not re.search(r"\bdestination\b", gateway.help_text()):
        return "`dicom-gw destination` does not exist yet (forwarding not implemented)"
    steps = [
        ("destination", "add", "sink", "--ae-title", sink.ae_title, "--host", "127.0.0.1",
         "--port", str(sink.port)),
        ("rule", "add", "everything-to-sink", "--to", "sink"),
    ]  # fmt: skip
    for step in steps:
        result = gateway.cli(*step)
        if result.returncode != 0:
            output = (result.stderr or result.stdout).strip().splitlines()
            return (
                f"`dicom-gw {' '.join(step[:2])}` failed ({result.returncode}): "
                f"{output[-1] if output else 'no output'}; adapt configure_gateway_forwarding"
            )
    return None
