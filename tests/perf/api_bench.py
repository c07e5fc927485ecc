"""The API benchmark (issue 8): studies search and study detail over HTTP with ~1 M instances.

The gateway is started as for the other scenarios (``dicom-gw --config <toml> run``, private
PostgreSQL). Its index is then filled straight in the database with set-based SQL (``INSERT ...
SELECT ... generate_series``, seeded, no DICOM files): patients with their PHI encrypted and
blind-indexed exactly as the ingest worker stores them (``pgp_sym_encrypt`` with the gateway's
key, HMAC-SHA256 of the Patient ID; the name search's trigram hashes are then computed by
``dicom-gw migrate``, as for rows indexed before those hashes existed), studies, series and
instances in realistic proportions (about 50 instances per study, CT/MR/PET studies of several
large series, radiographs of one or two images). After ``VACUUM ANALYZE`` an API user is created with ``dicom-gw user add``, logs in
over the API, and N threads with a keep-alive HTTP connection each call the endpoints for a
fixed time, one phase per endpoint, recording each request's latency (send to last body byte).

Every request goes through authentication and writes its audit row (the API audits PHI reads),
so that cost is part of the figures. Run alone (keeps the gateway up for EXPLAIN with --keep):

    python -m tests.perf.api_bench --instances 100000 [--clients 8] [--seconds 20] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from tests.perf.stats import percentile
from tests.perf.systems import (
    DEFAULT_GATEWAY,
    DEFAULT_WORK_DIR,
    BenchSystemError,
    Gateway,
    ProcessMonitor,
    Usage,
)

FULL_INSTANCES = 1_000_000
QUICK_INSTANCES = 100_000
INSTANCES_PER_STUDY = 50  # ~20 k studies for 1 M instances
STUDIES_PER_PATIENT = 1.6
USERNAME = "bench-viewer"
# What the ingest worker passes to pgp_sym_encrypt (dicom_gw.security.phi.PGP_OPTIONS; the
# harness's venv does not import the app). A unit test keeps the two equal.
PGP_OPTIONS = "cipher-algo=aes256, s2k-mode=1"
TARGET_P95_MS = 200.0

# The search filters the clients cycle through (each search request picks the next one).
SEARCH_KINDS = (
    "first page",
    "patient name",
    "patient ID",
    "study date range",
    "modality",
    "accession",
)

SURNAMES = [
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "GONZALEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "PEREZ",
    "THOMPSON",
    "WHITE",
    "HARRIS",
    "SANCHEZ",
    "CLARK",
    "RAMIREZ",
    "LEWIS",
    "ROBINSON",
    "WALKER",
    "YOUNG",
    "ALLEN",
    "KING",
    "WRIGHT",
    "SCOTT",
    "TORRES",
    "NGUYEN",
    "HILL",
    "FLORES",
    "GREEN",
    "ADAMS",
    "NELSON",
    "BAKER",
    "HALL",
    "RIVERA",
    "CAMPBELL",
    "MITCHELL",
    "CARTER",
    "ROBERTS",
    "MULLER",
    "SCHMIDT",
    "SCHNEIDER",
    "FISCHER",
    "WEBER",
    "MEYER",
    "WAGNER",
    "BECKER",
    "SCHULZ",
    "HOFFMANN",
    "DUBOIS",
    "DURAND",
    "LEROY",
    "MOREAU",
    "LAURENT",
    "SIMON",
    "MICHEL",
    "LEFEBVRE",
    "ROSSI",
    "RUSSO",
    "FERRARI",
    "ESPOSITO",
    "BIANCHI",
    "ROMANO",
    "COLOMBO",
    "RICCI",
    "MARINO",
    "GRECO",
    "NOVAK",
    "SVOBODA",
    "NOWAK",
    "KOWALSKI",
    "WISNIEWSKI",
    "JANSEN",
    "DEVRIES",
    "VANDENBERG",
    "BAKKER",
    "JANSSENS",
    "PEETERS",
    "MAES",
    "SILVA",
    "SANTOS",
    "FERREIRA",
    "PEREIRA",
    "OLIVEIRA",
    "COSTA",
    "TANAKA",
    "SATO",
    "SUZUKI",
    "KIM",
    "PARK",
    "CHOI",
    "WANG",
    "LI",
    "ZHANG",
    "LIU",
    "CHEN",
    "YANG",
    "HUANG",
    "ZHAO",
    "WU",
    "ZHOU",
]
GIVEN = [
    "JAMES",
    "MARY",
    "ROBERT",
    "PATRICIA",
    "JOHN",
    "JENNIFER",
    "MICHAEL",
    "LINDA",
    "DAVID",
    "ELIZABETH",
    "WILLIAM",
    "BARBARA",
    "RICHARD",
    "SUSAN",
    "JOSEPH",
    "JESSICA",
    "THOMAS",
    "SARAH",
    "CHARLES",
    "KAREN",
    "MARIA",
    "ANNA",
    "PETER",
    "EVA",
    "JAN",
    "SOPHIE",
    "LUCAS",
    "EMMA",
    "NOAH",
    "OLIVIA",
    "LEO",
    "MIA",
    "PAUL",
    "CLARA",
    "HUGO",
    "LEA",
    "MARC",
    "JULIA",
    "ANDREA",
    "LUCA",
    "YUKI",
    "HANA",
    "WEI",
    "MIN",
]

# psql variables: phi (the key as hex: the pgcrypto passphrase and the HMAC key), pgp (pgcrypto
# options, '' as the ingest worker uses), instances, studies, patients. random() is seeded, so a given size gives the same rows on every machine.
GENERATE_SQL = r"""
\set ON_ERROR_STOP on
SET synchronous_commit = off;
SET maintenance_work_mem = '256MB';
SET work_mem = '64MB';
SELECT setseed(0.42);
BEGIN;

-- Patients, as the ingest worker writes them: PHI encrypted with the gateway's key, and the
-- blind index HMAC-SHA256(key, PatientID || '\' || IssuerOfPatientID) with an empty issuer.
-- Surnames are skewed (random()^2): a few common names, a long tail, as in a real registry.
CREATE TEMP TABLE pt_plan ON COMMIT DROP AS
SELECT g,
       'MRN' || lpad(((g::bigint * 7919) % 10000000)::text, 7, '0') AS pid,
       (:'surnames'::text[])[1 + floor(random() ^ 2 * cardinality(:'surnames'::text[]))::int]
         || '^' || (:'given'::text[])[1 + floor(random() * cardinality(:'given'::text[]))::int]
         AS name,
       to_char(date '1930-01-01' + floor(random() * 33000)::int, 'YYYYMMDD') AS birth,
       CASE WHEN random() < 0.5 THEN 'F' ELSE 'M' END AS sex
  FROM generate_series(1, :patients) g;

INSERT INTO patients (id, patient_key, patient_id_enc, patient_name_enc, birth_date_enc, sex)
SELECT nextval('patients_id_seq'), hmac(convert_to(pid || chr(92), 'UTF8'), decode(:'phi', 'hex'),
       'sha256'), pgp_sym_encrypt(pid, :'phi', :'pgp'), pgp_sym_encrypt(name, :'phi', :'pgp'),
       pgp_sym_encrypt(birth, :'phi', :'pgp'), sex
  FROM pt_plan ORDER BY g;

-- Studies: received over the last two years in id order (as ingestion would number them),
-- studied mostly the same day, some priors older; ~3 % without an accession number.
CREATE TEMP TABLE st_plan ON COMMIT DROP AS
SELECT nextval('studies_id_seq') AS id, s, r,
       CASE WHEN r < 0.30 THEN 'CT' WHEN r < 0.55 THEN 'MR' WHEN r < 0.70 THEN 'CR'
            WHEN r < 0.80 THEN 'DX' WHEN r < 0.90 THEN 'US' WHEN r < 0.95 THEN 'PT'
            ELSE 'MG' END AS modality,
       received,
       (received - floor(random() ^ 6 * 400)::int * interval '1 day')::date AS study_date,
       CASE WHEN random() < 0.03 THEN NULL
            ELSE 'A' || lpad(((s::bigint * 104729) % 100000000)::text, 8, '0') END AS accession,
       (SELECT min(id) FROM patients) + floor(random() * :patients)::int AS patient_id,
       (ARRAY['HEAD', 'CHEST', 'ABDOMEN', 'PELVIS', 'SPINE', 'KNEE', 'SHOULDER', 'BREAST',
              'CARDIAC', 'WHOLE BODY'])[1 + floor(random() * 10)::int] AS body_part
  FROM (SELECT s, random() AS r,
               now() - interval '730 days' * (1 - s::float8 / :studies)
                 - random() * interval '1 hour' AS received
          FROM generate_series(1, :studies) s) x;

-- Series: CT, MR and PET studies have 3 to 8 large series (a PET study also a CT series),
-- the others 1 to 3 series of a few images. Instance counts are weights scaled to the total.
CREATE TEMP TABLE se_plan ON COMMIT DROP AS
SELECT nextval('series_id_seq') AS id, st.id AS study_id, st.s, k AS series_number,
       CASE WHEN st.modality = 'PT' AND k = 1 THEN 'CT' ELSE st.modality END AS modality,
       st.body_part, st.received + k * interval '20 seconds' AS received,
       CASE WHEN st.modality IN ('CT', 'MR', 'PT') THEN 0.2 + random() ^ 2 * 2
            WHEN st.modality = 'US' THEN 0.05 + random() * 0.2
            ELSE 0.005 + random() * 0.01 END AS w
  FROM st_plan st,
       generate_series(1, CASE WHEN st.modality IN ('CT', 'MR', 'PT')
                               THEN 3 + floor(random() * 6)::int
                               ELSE 1 + floor(random() * 3)::int END) k;
ALTER TABLE se_plan ADD COLUMN n int;
UPDATE se_plan SET n = greatest(1, round(w * :instances / (SELECT sum(w) FROM se_plan)))::int;

INSERT INTO studies (id, study_instance_uid, patient_id, study_date, study_time, accession_number,
                     study_description, modalities, calling_ae, instance_count,
                     first_received_at, last_received_at)
SELECT st.id, '1.2.826.0.1.3680043.9.7433.1.' || st.s, st.patient_id, st.study_date,
       to_char(st.received, 'HH24MISS'), st.accession, st.modality || ' ' || st.body_part,
       agg.modalities, st.modality || '_' || (1 + st.s % 3), agg.n, st.received,
       st.received + agg.series * interval '20 seconds'
  FROM st_plan st
  JOIN (SELECT study_id, array_agg(DISTINCT modality ORDER BY modality) AS modalities,
               sum(n)::int AS n, count(*) AS series
          FROM se_plan GROUP BY study_id) agg ON agg.study_id = st.id;

INSERT INTO series (id, series_instance_uid, study_id, modality, series_number,
                    series_description, body_part, instance_count, last_received_at)
SELECT id, '1.2.826.0.1.3680043.9.7433.2.' || s || '.' || series_number, study_id, modality,
       series_number, modality || ' ' || body_part || ' ' || series_number, body_part, n,
       received + n * interval '50 milliseconds'
  FROM se_plan;

-- A gateway in its steady state: the index keeps every instance, the files of those older
-- than the retention period (168 h as shipped) are gone, as the cleanup worker leaves them.
-- Without deleted_at the cleanup worker would be deleting during the measurement.
INSERT INTO instances (sop_instance_uid, sop_class_uid, series_id, instance_number,
                       transfer_syntax_uid, size_bytes, sha256, storage_path, received_at,
                       calling_ae, called_ae, peer_address, is_latest, deleted_at)
SELECT '1.2.826.0.1.3680043.9.7433.3.' || se.id || '.' || i,
       CASE se.modality WHEN 'CT' THEN '1.2.840.10008.5.1.4.1.1.2'
                        WHEN 'MR' THEN '1.2.840.10008.5.1.4.1.1.4'
                        WHEN 'CR' THEN '1.2.840.10008.5.1.4.1.1.1'
                        WHEN 'DX' THEN '1.2.840.10008.5.1.4.1.1.1.1'
                        WHEN 'US' THEN '1.2.840.10008.5.1.4.1.1.6.1'
                        WHEN 'PT' THEN '1.2.840.10008.5.1.4.1.1.128'
                        ELSE '1.2.840.10008.5.1.4.1.1.1.2' END,
       se.id, i, '1.2.840.10008.1.2.1',
       CASE WHEN se.modality IN ('CR', 'DX', 'MG') THEN 18000000 ELSE 530000 END,
       md5(se.id || '/' || i) || md5(i || '/' || se.id),
       to_char(se.received, 'YYYY/MM/DD') || '/' || se.study_id || '/' || se.id || '/' || i
         || '.dcm',
       se.received + i * interval '50 milliseconds',
       se.modality || '_' || (1 + se.s % 3), 'DICOM_GW', '10.20.30.40', true,
       CASE WHEN se.received < now() - interval '169 hours'
            THEN se.received + interval '168 hours' END
  FROM se_plan se, generate_series(1, se.n) i;

COMMIT;
VACUUM (ANALYZE) patients, studies, series, instances;
SELECT (SELECT count(*) FROM patients), (SELECT count(*) FROM studies),
       (SELECT count(*) FROM series), (SELECT count(*) FROM instances);
"""


def _pg_array(words: list[str]) -> str:
    return "{" + ",".join(words) + "}"


@dataclass
class Population:
    instances: int
    studies: int
    patients: int
    series: int
    seconds: float


def populate(gateway: Gateway, instances: int, pgp_options: str = PGP_OPTIONS) -> Population:
    """Bulk-generate the index for about `instances` instances (see GENERATE_SQL)."""
    studies = max(1, instances // INSTANCES_PER_STUDY)
    patients = max(1, int(studies / STUDIES_PER_PATIENT))
    started = time.monotonic()
    out = gateway.psql(
        GENERATE_SQL,
        {
            "phi": gateway.phi_key_hex(),
            "pgp": pgp_options,
            "instances": str(instances),
            "studies": str(studies),
            "patients": str(patients),
            "surnames": _pg_array(SURNAMES),
            "given": _pg_array(GIVEN),
        },
    )
    counts = [int(v) for v in out.strip().splitlines()[-1].split("|")]
    # The generated rows lack the name search's keyed trigram hashes, as rows from before that
    # index do; the gateway's own `migrate` computes them with its key (it has the HMAC code).
    hashed = gateway.cli("migrate", timeout=600)
    if hashed.returncode != 0:
        raise BenchSystemError(
            f"dicom-gw migrate failed ({hashed.returncode}): "
            f"{(hashed.stderr or hashed.stdout).strip()[-500:]}"
        )
    gateway.psql("VACUUM (ANALYZE) patients;")
    return Population(counts[3], counts[1], counts[0], counts[2], time.monotonic() - started)


@dataclass
class Samples:
    """Real values from the generated rows, for the clients' filters and detail requests."""

    patient_ids: list[str]
    accessions: list[str]
    study_ids: list[int]
    dates: list[str]


def sample_values(gateway: Gateway, count: int = 400) -> Samples:
    out = gateway.psql(
        "SELECT 'p|' || pgp_sym_decrypt(patient_id_enc, :'phi') FROM patients"
        f" ORDER BY random() LIMIT {count};"
        f" SELECT 'a|' || accession_number FROM studies WHERE accession_number IS NOT NULL"
        f" ORDER BY random() LIMIT {count};"
        f" SELECT 's|' || id FROM studies ORDER BY random() LIMIT {count};"
        f" SELECT 'd|' || study_date FROM studies ORDER BY random() LIMIT {count};",
        {"phi": gateway.phi_key_hex()},
    )
    values: dict[str, list[str]] = {"p": [], "a": [], "s": [], "d": []}
    for line in out.splitlines():
        kind, _, value = line.partition("|")
        if kind in values:
            values[kind].append(value)
    return Samples(values["p"], values["a"], [int(v) for v in values["s"]], values["d"])


# --------------------------------------------------------------------------------------------
# HTTP clients


class Client:
    """One keep-alive HTTP/1.1 connection; reconnects once when the server closed it idle."""

    def __init__(self, port: int, token: str = "") -> None:
        self.port = port
        self.token = token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def request(self, method: str, path: str, body: dict[str, str] | None = None) -> bytes:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=payload, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine):
                self.conn.close()
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise BenchSystemError(
                    f"{method} {path.split('?')[0]}: HTTP {response.status} {data[:200]!r}"
                )
            return data
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def login(port: int, password: str) -> str:
    client = Client(port)
    try:
        data = client.request(
            "POST", "/api/v1/auth/login", {"username": USERNAME, "password": password}
        )
    finally:
        client.close()
    return str(json.loads(data)["access_token"])


def wait_api(port: int, timeout: float = 60.0) -> None:
    """The API answers /readyz (the gateway's DICOM port is up before its API workers)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            Client(port).request("GET", "/readyz")
            return
        except (OSError, BenchSystemError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def search_query(kind: str, rng: random.Random, samples: Samples) -> dict[str, str]:
    """The query string of one studies search of the given kind (page 1, 25 rows, as the UI)."""
    if kind == "patient name":
        # The UI's name box: the first letters of a surname (the API matches anywhere).
        surname = rng.choice(SURNAMES)
        return {"patient_name": surname[: rng.randint(3, 5)]}
    if kind == "patient ID":
        return {"patient_id": rng.choice(samples.patient_ids)}
    if kind == "study date range":
        start = rng.choice(samples.dates)
        year, month, day = (int(v) for v in start.split("-"))
        end = f"{year}-{month:02d}-{min(day + 6, 28):02d}" if day <= 28 else start
        return {"study_date_from": start, "study_date_to": end}
    if kind == "modality":
        return {"modality": rng.choice(["CT", "MR", "CR", "DX", "US", "PT", "MG"])}
    if kind == "accession":
        return {"accession_number": rng.choice(samples.accessions)}
    return {}


@dataclass
class Phase:
    """One endpoint driven by all clients for a fixed time."""

    endpoint: str
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)  # kind -> seconds
    errors: list[str] = field(default_factory=list)
    usage: Usage | None = None

    @property
    def all_latencies(self) -> list[float]:
        return [v for values in self.latencies.values() for v in values]

    @property
    def requests(self) -> int:
        return len(self.all_latencies)


def run_phase(
    endpoint: str,
    port: int,
    token: str,
    samples: Samples,
    clients: int,
    seconds: float,
    monitor_roots: set[int],
) -> Phase:
    """`clients` threads call `endpoint` ("search" or "detail") for `seconds`, timing each."""
    phase = Phase(endpoint)
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    go = threading.Event()
    stop_at = [0.0]

    def worker(index: int) -> None:
        rng = random.Random(index * 7919 + len(endpoint))
        client = Client(port, token)
        local: dict[str, list[float]] = {}
        step = index  # clients start at different filter kinds, so every kind runs at once
        try:
            # One untimed request first: the connection, the API worker's first use of the pool.
            warm_up = (
                "/api/v1/studies?page_size=1"
                if endpoint == "search"
                else f"/api/v1/studies/{samples.study_ids[index % len(samples.study_ids)]}"
            )
            client.request("GET", warm_up)
            ready.wait()
            go.wait()
            while time.monotonic() < stop_at[0]:
                if endpoint == "search":
                    kind = SEARCH_KINDS[step % len(SEARCH_KINDS)]
                    step += 1
                    path = "/api/v1/studies?" + urlencode(search_query(kind, rng, samples))
                else:
                    kind = "by id"
                    path = f"/api/v1/studies/{rng.choice(samples.study_ids)}"
                began = time.perf_counter()
                client.request("GET", path)
                local.setdefault(kind, []).append(time.perf_counter() - began)
        except Exception as exc:  # reported in the table, never raised out of a thread
            with lock:
                phase.errors.append(f"{type(exc).__name__}: {exc}")
            ready.abort()
        finally:
            client.close()
            with lock:
                for kind, values in local.items():
                    phase.latencies.setdefault(kind, []).extend(values)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    monitor = ProcessMonitor(monitor_roots)
    with contextlib.suppress(threading.BrokenBarrierError):
        ready.wait(timeout=300)
    began = time.monotonic()
    stop_at[0] = began + seconds
    monitor.start()
    go.set()
    for thread in threads:
        thread.join()
    phase.seconds = time.monotonic() - began
    phase.usage = monitor.stop()
    return phase


@dataclass
class ApiRun:
    population: Population | None = None
    phases: list[Phase] = field(default_factory=list)
    clients: int = 0
    error: str | None = None


def create_user(gateway: Gateway) -> str:
    """A viewer (clinical read access) made with the gateway's own CLI; returns its password."""
    password = secrets.token_urlsafe(24)
    secret = gateway.workdir / "bench-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    result = gateway.cli(
        "user", "add", USERNAME, "--role", "viewer", "--password-file", str(secret)
    )
    if result.returncode != 0:
        raise BenchSystemError(
            f"dicom-gw user add failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
    return password


def run_api(
    gateway: Gateway,
    instances: int,
    clients: int,
    seconds: float,
    say: Callable[[str], None] = lambda _: None,
    pgp_options: str = PGP_OPTIONS,
) -> ApiRun:
    """Fill the started gateway's index, then time the search and the detail phases."""
    run = ApiRun(clients=clients)
    wait_api(gateway.api_port)
    say(f"api: generating ~{instances:,} instances")
    run.population = populate(gateway, instances, pgp_options)
    say(
        f"api: {run.population.instances:,} instances, {run.population.studies:,} studies, "
        f"{run.population.patients:,} patients in {run.population.seconds:.0f}s"
    )
    samples = sample_values(gateway)
    token = login(gateway.api_port, create_user(gateway))
    for endpoint in ("search", "detail"):
        phase = run_phase(
            endpoint, gateway.api_port, token, samples, clients, seconds, gateway.root_pids()
        )
        run.phases.append(phase)
        p95 = percentile(phase.all_latencies, 95)
        say(
            f"api: {endpoint}: {phase.requests} requests in {phase.seconds:.0f}s, p95 "
            f"{p95 * 1000 if p95 is not None else float('nan'):.0f} ms"
            + (f", errors: {phase.errors[0]}" if phase.errors else "")
        )
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dicom-gw API benchmark alone (issue 8)")
    parser.add_argument("--instances", type=int, default=QUICK_INSTANCES)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--gateway", type=Path, default=DEFAULT_GATEWAY)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    parser.add_argument(
        "--keep", action="store_true", help="leave the gateway running (Ctrl-C stops it)"
    )
    parser.add_argument(
        "--pgp-options",
        default=PGP_OPTIONS,
        help="what-if: pgcrypto options for the generated PHI (default: the ingest worker's, "
        "dicom_gw.security.phi.PGP_OPTIONS; an empty string: pgcrypto's iterated default)",
    )
    options = parser.parse_args(argv)
    # SIGTERM (as from `kill`) unwinds like Ctrl-C, so the gateway and its cluster are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    gateway = Gateway(work_root=options.work_dir, name="gateway-api", binary=options.gateway)
    try:
        gateway.start()
        run = run_api(
            gateway,
            options.instances,
            options.clients,
            options.seconds,
            lambda text: print(text, file=sys.stderr, flush=True),
            options.pgp_options,
        )
        for phase in run.phases:
            for kind, values in sorted(phase.latencies.items()):
                p50, p95 = percentile(values, 50), percentile(values, 95)
                print(
                    f"{phase.endpoint:7} {kind:17} n={len(values):5} "
                    f"p50={(p50 or 0) * 1000:8.1f} ms p95={(p95 or 0) * 1000:8.1f} ms "
                    f"max={max(values) * 1000:8.1f} ms"
                )
        if options.keep:
            print(
                f"gateway up: API port {gateway.api_port}, psql -h "
                f"{gateway.state_dir / 'postgres' / 'socket'} -U postgres dicom_gw; Ctrl-C stops",
                file=sys.stderr,
            )
            with contextlib.suppress(KeyboardInterrupt):
                while gateway.process is not None and gateway.process.poll() is None:
                    time.sleep(1)
    finally:
        gateway.stop()
        if not options.keep:
            gateway.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
