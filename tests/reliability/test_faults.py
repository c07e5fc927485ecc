"""Faults under a steady sending load, each followed by the invariant checker: nothing a sender
saw acknowledged may be lost.

1. kill -9 of every service in turn under `dicom-gw run`, restarted by its supervisor (and the
   API alone, restarted by the test);
2. PostgreSQL stopped and restarted (a throwaway cluster of this test's own);
3. the storage file system full (a small tmpfs);
4. the network to a destination cut (a network namespace, veth pair, packet drop).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Gateway, free_port
from tests.dicom_data import ct_series
from tests.reliability.harness import (
    BACKOFF,
    FAST_FORWARD,
    CopySink,
    Supervised,
    alive,
    children,
    crash,
    http_status,
    kill9,
    network_namespace,
    receivers,
    service_args,
    throwaway_cluster,
    tmpfs,
)
from tests.reliability.invariants import (
    SUCCESS,
    SendRecord,
    SteadyLoad,
    check,
    check_when_settled,
    settled,
    unwhole_records,
)
from tests.support import wait_for


def hold(seconds: float) -> None:
    """Keep a fault in place for a while: the fault's duration, never a readiness wait."""
    threading.Event().wait(seconds)


def add_destination(gw: Gateway, name: str, ae_title: str, host: str, port: int) -> None:
    result = gw.cli(
        "destination", "add", name, "--ae-title", ae_title, "--host", host, "--port", str(port),
        *BACKOFF,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


# -- 1. kill -9 of each service, restarted by `dicom-gw run` ------------------------------------


def test_kill_minus_nine_of_each_service_loses_nothing(
    make_gateway: Callable[..., Gateway],
    copy_sinks: Callable[..., CopySink],
    tmp_path: Path,
    report: Callable[..., object],
) -> None:
    api_port = free_port()
    gw = make_gateway(
        run={"state_dir": str(tmp_path / "var")},
        api={"port": api_port, "workers": 1},
        cleanup={"enabled": False},
        forward=FAST_FORWARD,
    )
    sink = copy_sinks("ARCHIVE")
    gw.add_destination("archive", "ARCHIVE", sink.port, *BACKOFF, "--batch-size", "10")
    gw.add_rule("all", "--to", "archive")
    run = Supervised(gw, api_port)
    wait_for(run.ready, timeout=120, what="`dicom-gw run` with every service up")

    def kill_receivers() -> None:
        scp = run.one("scp")
        victims = receivers(scp)
        for pid in victims:  # both: whichever holds the association in progress dies
            kill9(pid)
        wait_for(
            lambda: len(receivers(scp)) == 2 and not set(victims) & set(receivers(scp)),
            timeout=60,
            what="the scp parent to restart its killed receivers",
        )
        assert run.one("scp") == scp  # recovered by the scp parent, not by `run`

    def kill_api_worker() -> None:
        master = run.one("api")
        [worker] = children(master)
        kill9(worker)
        wait_for(
            lambda: len(children(master)) == 1 and worker not in children(master),
            timeout=60,
            what="gunicorn to replace its killed worker",
        )
        wait_for(run.api_ok, timeout=30, what="the API answering again")

    def kill_service(*args: str) -> Callable[[], None]:
        def kill() -> None:
            old = run.one(*args)
            kill9(old)

            def restarted() -> bool:
                found = run.service(*args)
                return len(found) == 1 and found[0] != old and alive(found[0])

            wait_for(restarted, timeout=60, what=f"{' '.join(args)} restarted by `dicom-gw run`")
            if args == ("scp",):
                wait_for(
                    lambda: len(receivers(run.one("scp"))) == 2 and gw.echo_ok(),
                    timeout=60,
                    what="the restarted scp's receivers",
                )

        return kill

    faults: list[tuple[str, Callable[[], None]]] = [
        ("kill -9 of the receivers (scp parent restarts them)", kill_receivers),
        ("kill -9 of scp (receivers' parent)", kill_service("scp")),
        ("kill -9 of the ingest worker", kill_service("worker", "ingest")),
        ("kill -9 of the forward worker", kill_service("worker", "forward")),
        ("kill -9 of the dbpool worker", kill_service("worker", "dbpool")),
        ("kill -9 of an API worker (gunicorn replaces it)", kill_api_worker),
    ]
    records: dict[str, SendRecord] = {}
    for index, (name, fault) in enumerate(faults):
        files = ct_series(tmp_path / f"load{index}", count=30, size=32, seed=100 + index)
        load = SteadyLoad(gw.port, files, per_association=3, interval=0.05)
        load.start()
        wait_for(load.acknowledged_at_least(6), timeout=60, what=f"load acknowledged ({name})")
        fault()
        records[name] = load.finish()
        assert len(records[name].acknowledged) == 30, (name, records[name].statuses())

    everything = SendRecord()
    for record in records.values():
        everything.merge(record)
    result = check_when_settled(everything, gw.db_url, gw.storage, {"archive": sink.directory})
    for name, record in records.items():
        part = check(record, gw.db_url, gw.storage, {"archive": sink.directory}, quiet=True)
        report(
            name,
            cases=1,
            outcome=f"restarted; {part.acknowledged}/{part.sent} acknowledged after "
            f"{record.failures()} failed attempts resent",
            lost=part.lost,
            duplicated=part.duplicated,
        )
    assert result.ok, result.explain()

    # The dbpool loaded every segment once: no event twice, nothing left behind.
    duplicates = gw.sql(
        "SELECT instance_id FROM ingest_events WHERE kind = 'indexed'"
        " GROUP BY instance_id HAVING count(*) > 1"
    )
    assert duplicates == []
    spool = gw.storage / "spool"
    wait_for(
        lambda: not list(spool.rglob("*.jsonl")), timeout=30, what="every spool segment loaded"
    )
    gw.stop("run", signal.SIGTERM)


def test_kill_minus_nine_of_the_api_master_then_restart(
    make_gateway: Callable[..., Gateway], report: Callable[..., object]
) -> None:
    api_port = free_port()
    gw = make_gateway(api={"port": api_port, "workers": 2})
    url = f"http://127.0.0.1:{api_port}/healthz"
    master = gw.start("api", "api")
    wait_for(lambda: len(children(master.pid)) == 2 and http_status(url) == 200, timeout=60,
             what="the API with its 2 workers")  # fmt: skip
    old_workers = children(master.pid)
    try:
        kill9(master.pid)
        master.wait()
        gw.processes.pop("api")
        # Its workers must go with it: an orphan would keep the port from the restarted API.
        wait_for(
            lambda: not any(alive(pid) for pid in old_workers),
            timeout=15,
            what="the killed master's workers to exit",
        )
        restarted = gw.start("api-restarted", "api")
        wait_for(
            lambda: (
                restarted.poll() is None
                and len(children(restarted.pid)) == 2
                and http_status(url) == 200
            ),
            timeout=60,
            what="the restarted API serving on its port",
        )
        report(
            "kill -9 of the API master, then restart",
            cases=1,
            outcome="its workers exited with it; the restarted API serves the port",
            lost=0,
            duplicated=0,
        )
    finally:
        for pid in old_workers:  # the orphans this test made, by their pids
            if alive(pid) and "api" in service_args(pid):
                kill9(pid)


# -- 2. PostgreSQL stopped ----------------------------------------------------------------------

# A receipt's record is committed asynchronously (the durable file is the journal): recovery in
# the ingest workers restores records a crash lost. Files younger than the grace are left to the
# receivers recording them; it must exceed how long a receiver may wait for the database
# (connect_timeout_seconds), or recovery and a receiver that then gives up race on one file.
DB_WAIT = {"connect_timeout_seconds": 2}
RECOVERY = {"recovery_grace_seconds": 3, "poll_interval_seconds": 1, "lease_seconds": 3}


@pytest.mark.parametrize(
    ("stop", "outage"),
    [("crash", 10), pytest.param("fast", 30, marks=pytest.mark.soak)],
)
def test_postgres_down_then_back_loses_nothing(
    stop: str,
    outage: float,
    make_gateway: Callable[..., Gateway],
    copy_sinks: Callable[..., CopySink],
    tmp_path: Path,
    report: Callable[..., object],
) -> None:
    with throwaway_cluster() as (cluster, url):
        gw = make_gateway(forward=FAST_FORWARD, ingest=RECOVERY)
        gw.db_url = url
        gw.options["database"] = DB_WAIT
        gw.write_config()
        sink = copy_sinks("ARCHIVE")
        gw.add_destination("archive", "ARCHIVE", sink.port, *BACKOFF)
        gw.add_rule("all", "--to", "archive")
        gw.start_scp()
        ingest = gw.start_ingest()
        forward = gw.start_forward()
        dbpool = gw.start("dbpool", "worker", "dbpool")

        files = ct_series(tmp_path / "ct", count=60, size=32)
        load = SteadyLoad(gw.port, files, per_association=3, interval=0.1, retry_backoff=0.5)
        load.start()
        wait_for(load.acknowledged_at_least(10), timeout=60, what="load acknowledged")
        if stop == "crash":
            crash(cluster)  # immediate: no checkpoint, unflushed WAL lost
        else:
            cluster.stop()  # fast: a clean shutdown
        down_at = time.monotonic()
        failures = load.record.failures()
        # While PostgreSQL is down the SCP cannot record, so it must not answer success.
        wait_for(lambda: load.record.failures() >= failures + 3, timeout=60, what="refusals seen")
        hold(max(0.0, outage - (time.monotonic() - down_at)))  # the outage's length
        up_at = time.monotonic()
        cluster.start()
        record = load.finish()
        # Margin: an answer for a commit made just before the stop may arrive a moment later.
        during = record.answered_between(down_at + 0.5, up_at)
        assert during, "no store was attempted during the outage"
        assert not [a for a in during if a.status == SUCCESS], "success answered without a DB"
        refused: dict[int | None, int] = {}
        for attempt in during:
            refused[attempt.status] = refused.get(attempt.status, 0) + 1

        result = check_when_settled(record, url, gw.storage, {"archive": sink.directory})
        [(recovered,)] = gw.sql("SELECT count(*) FROM ingest_jobs WHERE source = 'recovery'")
        report(
            f"PostgreSQL {'crashed (immediate stop)' if stop == 'crash' else 'stopped'}"
            f" {up_at - down_at:.0f} s",
            cases=len(during),
            outcome=f"stores during the outage answered {_statuses(refused)}; workers "
            f"reconnected; {recovered} lost record(s) recovered from their files",
            lost=result.lost,
            duplicated=result.duplicated,
        )
        assert result.ok, result.explain()
        assert settled(url)  # no job or delivery stuck
        for process in (ingest, forward, dbpool):
            assert process.poll() is None, "a worker died instead of waiting for the database"
        gw.stop_all()


def test_records_lost_in_a_postgres_crash_are_routed_as_received(
    make_gateway: Callable[..., Gateway],
    copy_sinks: Callable[..., CopySink],
    tmp_path: Path,
    report: Callable[..., object],
) -> None:
    # The WAL writer flushes asynchronous commits only every 10 s here, and the workers are
    # frozen (their synchronous commits would flush it too): the crash surely loses the records.
    with throwaway_cluster(wal_writer_delay="'10s'") as (cluster, url):
        gw = make_gateway(forward=FAST_FORWARD, ingest=RECOVERY)
        gw.db_url = url
        gw.options["database"] = DB_WAIT
        gw.write_config()
        sink = copy_sinks("FROM_MODALITY")
        gw.add_destination("from-modality", "FROM_MODALITY", sink.port, *BACKOFF)
        gw.add_rule("by-caller", "--when", "calling_ae:equals:TESTSCU", "--to", "from-modality")
        gw.start_scp()
        ingest = gw.start_ingest()
        forward = gw.start_forward()
        wait_for(lambda: "ready" in gw.log("ingest") and "ready" in gw.log("forward"),
                 what="workers ready")  # fmt: skip
        for worker in (ingest, forward):
            os.kill(worker.pid, signal.SIGSTOP)
        try:
            files = ct_series(tmp_path / "ct", count=5, size=32)
            record = SteadyLoad(gw.port, files).run_and_finish()
            assert len(record.acknowledged) == 5
            crash(cluster)
            cluster.start()
            hold(RECOVERY["recovery_grace_seconds"])  # the files age past the recovery grace
        finally:
            for worker in (ingest, forward):
                os.kill(worker.pid, signal.SIGCONT)
        wait_for(
            lambda: gw.sql("SELECT count(*) FROM ingest_jobs")[0][0] == 5,
            timeout=30,
            what="the records the crash lost restored by recovery",
        )
        result = check_when_settled(
            record, url, gw.storage, {"from-modality": sink.directory}, timeout=15
        )
        [(recovered,)] = gw.sql("SELECT count(*) FROM ingest_jobs WHERE source = 'recovery'")
        report(
            "PostgreSQL crash: routing of recovered records",
            cases=5,
            outcome=f"{recovered} record(s) lost in the crash, recovered from their files",
            lost=result.lost,
            duplicated=result.duplicated,
        )
        gw.stop_all()
        assert recovered == 5  # the scenario happened: every record was lost and recovered
        assert result.ok, result.explain()


# -- 3. disk full -------------------------------------------------------------------------------


def fill(filesystem: Path, leave: int = 0) -> Path:
    """Fill a file system with a filler file, leaving about ``leave`` bytes free."""
    filler = filesystem / f"filler-{len(list(filesystem.glob('filler-*')))}.bin"
    free = os.statvfs(filesystem).f_bavail * os.statvfs(filesystem).f_frsize
    with filler.open("wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    return filler


def test_disk_full_refuses_and_resumes_when_space_returns(
    make_gateway: Callable[..., Gateway], tmp_path: Path, report: Callable[..., object]
) -> None:
    gw = make_gateway(storage={"disk_watermark_percent": 100})
    with tmpfs(gw.storage, "8m"):
        gw.start_scp()
        filler = fill(gw.storage, leave=1200 * 1024)  # room for a handful of 128 KiB instances
        files = ct_series(tmp_path / "ct", count=24, size=256)
        record = SteadyLoad(gw.port, files, per_association=4, rounds=1).run_and_finish()
        statuses = record.statuses()
        assert record.acknowledged, statuses
        assert len(record.acknowledged) < len(files), "the disk never filled"
        # Every refusal is a refusal: only acknowledged instances were recorded, whole.
        recorded = {uid for (uid,) in gw.sql("SELECT sop_instance_uid FROM ingest_jobs")}
        assert recorded == record.acknowledged
        assert unwhole_records(gw.db_url, gw.storage) == []

        filler.unlink()  # space returns: the same SCP takes the resent instances
        ingest = gw.start_ingest()
        SteadyLoad(gw.port, record.unacknowledged_paths(), record=record).run_and_finish()
        result = check_when_settled(record, gw.db_url, gw.storage)
        report(
            "disk full: storage tmpfs of 8 MiB, watermark 100%",
            cases=sum(statuses.values()),
            outcome=f"answers while full {_statuses(statuses)}; all stored once space returned",
            lost=result.lost,
            duplicated=result.duplicated,
        )
        assert result.ok, result.explain()
        assert len(record.acknowledged) == len(files)
        assert ingest.poll() is None
        gw.stop_all()


def _statuses(statuses: dict[int | None, int]) -> str:
    names = {None: "no answer/refused", 0: "success"}
    return ", ".join(
        f"{names.get(k, f'0x{k:04X}' if k is not None else '')} x{v}"
        for k, v in sorted(statuses.items(), key=lambda kv: -1 if kv[0] is None else kv[0])
    )


def test_enospc_mid_data_set_is_answered_out_of_resources(
    make_gateway: Callable[..., Gateway], tmp_path: Path, report: Callable[..., object]
) -> None:
    gw = make_gateway(storage={"disk_watermark_percent": 100})
    with tmpfs(gw.storage, "8m"):
        gw.start_scp()
        fill(gw.storage, leave=64 * 1024)  # less than one 128 KiB instance
        [source] = ct_series(tmp_path / "ct", count=1, size=256)
        record = SteadyLoad(gw.port, [source], rounds=1).run_and_finish()
        try:
            report("disk full: ENOSPC inside a data set", cases=1,
                   outcome=f"answered {_statuses(record.statuses())}", lost=0, duplicated=0)  # fmt: skip
            assert record.statuses() == {0xA700: 1}, _statuses(record.statuses())
            # The partial receipt is gone (the receiver's empty spare files may remain).
            tmp_left = [p for p in (gw.storage / "tmp").rglob("*") if p.is_file()]
            assert [p for p in tmp_left if p.stat().st_size] == []
            assert gw.sql("SELECT count(*) FROM ingest_jobs") == [(0,)]
        finally:
            gw.stop_all()


def test_ingest_worker_survives_a_full_disk(
    make_gateway: Callable[..., Gateway], tmp_path: Path, report: Callable[..., object]
) -> None:
    # One record per spool segment: every event is written through at once, in the indexing.
    gw = make_gateway(storage={"disk_watermark_percent": 100}, dbpool={"segment_max_records": 1})
    with tmpfs(gw.storage, "8m"):
        gw.start_scp()
        files = ct_series(tmp_path / "ct", count=5, size=32)
        record = SteadyLoad(gw.port, files).run_and_finish()
        assert len(record.acknowledged) == 5
        fill(gw.storage)  # now full: indexing writes nothing to storage but its event spool
        ingest = gw.start_ingest()
        try:
            wait_for(
                lambda: (
                    ingest.poll() is not None or gw.sql("SELECT count(*) FROM instances")[0][0] == 5
                ),
                timeout=60,
                what="the instances indexed (or the worker gone)",
            )
            assert ingest.poll() is None, gw.log("ingest")[-1500:]
            result = check_when_settled(record, gw.db_url, gw.storage, timeout=30)
            report(
                "disk full: ingest worker (event spool unwritable)",
                cases=5,
                outcome="indexed everything with the disk full; the worker kept running",
                lost=result.lost,
                duplicated=result.duplicated,
            )
            assert result.ok, result.explain()
        finally:
            gw.stop_all()


# -- 4. network cut between the gateway and a destination ---------------------------------------


def test_network_cut_to_a_destination_is_classified_and_resumes(
    make_gateway: Callable[..., Gateway],
    copy_sinks: Callable[..., CopySink],
    tmp_path: Path,
    report: Callable[..., object],
) -> None:
    with network_namespace() as ns:
        gw = make_gateway(forward=FAST_FORWARD)
        far = copy_sinks("FAR", netns=ns.name, host=ns.ns_ip)
        near = copy_sinks("NEAR")
        add_destination(gw, "far", "FAR", ns.ns_ip, far.port)
        add_destination(gw, "near", "NEAR", "127.0.0.1", near.port)
        gw.add_rule("all", "--to", "far", "--to", "near")
        gw.start_scp()
        gw.start_ingest()
        gw.start_forward()
        sinks = {"far": far.directory, "near": near.directory}

        before = ct_series(tmp_path / "before", count=10, size=32, seed=1)
        record = SteadyLoad(gw.port, before).run_and_finish()
        assert check_when_settled(record, gw.db_url, gw.storage, sinks, timeout=60).ok

        ns.cut()
        cut_at = time.monotonic()
        during = ct_series(tmp_path / "during", count=20, size=32, seed=2)
        load = SteadyLoad(gw.port, during, record=record, interval=0.1)
        load.start()
        load.finish()
        # The other destination is unaffected while this one is unreachable...
        wait_for(lambda: len(near.received()) == 30, timeout=60, what="the near sink meanwhile")
        # ...and the cut is classified as a timeout, within the configured timeouts.
        timeout_reasons = (
            "SELECT DISTINCT e.reason FROM delivery_events e JOIN deliveries d"
            " ON d.id = e.delivery_id JOIN destinations t ON t.id = d.destination_id"
            " WHERE t.name = 'far' AND e.to_state = 'retry'"
        )
        wait_for(
            lambda: any("timed out" in (r or "") for (r,) in gw.sql(timeout_reasons)),
            timeout=3 + 3 + 15,
            what="a delivery to the cut destination failed as timed out",
        )
        classified_in = time.monotonic() - cut_at
        reasons = sorted({(r or "").split(":")[0] for (r,) in gw.sql(timeout_reasons)})
        assert len(far.received()) == 10
        ns.restore()
        result = check_when_settled(record, gw.db_url, gw.storage, sinks, timeout=180)
        report(
            "network cut to one destination (netns, packet drop)",
            cases=len(during),
            outcome=f"classified {reasons} after {classified_in:.0f} s; other destination "
            "unaffected; all delivered after the cut",
            lost=result.lost,
            duplicated=result.duplicated,
        )
        assert result.ok, result.explain()
        gw.stop_all()
