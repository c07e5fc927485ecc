"""Verify the distributed layout from outside: one database host, two gateway hosts sharing the
storage directory, one proxy balancing the API (http) and the DICOM port (stream).

testinfra's native podman backend (one `podman exec` per command). The proxy container plays the
modality (storescu to the proxy's DICOM port) and the forwarding destination (a storescp sink).
The last test stops a gateway host while associations keep arriving and checks that everything
the sender saw acknowledged is indexed once and delivered.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import testinfra

DB = "dicom-gw-db1"
GATEWAYS = ["dicom-gw-gw1", "dicom-gw-gw2"]
PROXY = "dicom-gw-proxy1"
GATEWAY_ADDRESSES = {"dicom-gw-gw1": "10.213.77.11", "dicom-gw-gw2": "10.213.77.12"}
INTERNAL_NETWORK = "10.213.77."
SERVER_NAME = "gateway.dicom-gw.test"
STORAGE = "/var/lib/dicom-gw/storage"
DICOM_PORT = 11112
SINK_PORT = 11113
CALLING_AE = "MOLECULE_SCU"
CALLED_AE = "DICOM_GW"
CLI = "/opt/dicom-gw/venv/bin/dicom-gw --config /etc/dicom-gw/gateway.toml"
RUN = int(time.time())
STUDY_UID = f"1.2.826.0.1.3680043.10.1071.2.{RUN}"

GATEWAY_SERVICES = [
    "dicom-gw-scp.service",
    "dicom-gw-ingest@1.service",
    "dicom-gw-forward@1.service",
    "dicom-gw-dbpool.service",
    "dicom-gw-cleanup.service",
    "dicom-gw-api.service",
]
RUNNING = {
    DB: ["postgresql@15-main.service", "dicom-gw-pg-backup.timer", "nftables.service"],
    "dicom-gw-gw1": GATEWAY_SERVICES + ["nftables.service"],
    "dicom-gw-gw2": GATEWAY_SERVICES + ["nftables.service"],
    PROXY: ["nginx.service", "nftables.service"],
}
ABSENT = {
    DB: ["dicom-gw-scp.service", "nginx.service"],
    "dicom-gw-gw1": ["postgresql@15-main.service", "nginx.service", "dicom-gw-api.socket"],
    "dicom-gw-gw2": ["postgresql@15-main.service", "nginx.service", "dicom-gw-api.socket"],
    PROXY: ["postgresql@15-main.service", "dicom-gw-scp.service"],
}


def _host(name: str):
    return testinfra.get_host(f"podman://{name}")


def _podman(*args: str) -> subprocess.CompletedProcess[str]:
    # CONTAINERS_CONF comes from the environment `make molecule` sets (molecule/containers.conf).
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=False)


def _wait(condition, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _sql(query: str) -> str:
    cmd = _host(DB).run("runuser -u postgres -- psql -X -d dicom_gw -tA -c %s", query)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


# --- every unit on the right host ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "unit"), [(name, unit) for name, units in RUNNING.items() for unit in units]
)
def test_unit_active_and_enabled_on_its_host(name, unit):
    host = _host(name)
    assert host.run("systemctl is-active %s", unit).stdout.strip() == "active", host.run(
        "systemctl status --no-pager %s", unit
    ).stdout
    assert host.service(unit).is_enabled


@pytest.mark.parametrize(
    ("name", "unit"), [(name, unit) for name, units in ABSENT.items() for unit in units]
)
def test_unit_not_on_other_tiers(name, unit):
    cmd = _host(name).run("systemctl show -P LoadState %s", unit)
    assert cmd.stdout.strip() == "not-found", (name, unit, cmd.stdout)


# --- database: TLS and scram-sha-256 from the gateways ---------------------------------------


def test_postgresql_listens_on_the_internal_address():
    out = _host(DB).run("ss -Htln 'sport = :5432'").stdout
    addresses = {line.split()[3] for line in out.splitlines()}
    assert "10.213.77.10:5432" in addresses, addresses


def test_remote_clients_only_over_tls_with_scram():
    hba = _host(DB).file("/etc/postgresql/15/main/pg_hba.conf").content_string
    rules = [line.split() for line in hba.splitlines() if line.strip() and not line.startswith("#")]
    remote = [rule for rule in rules if rule[0].startswith("host") and "10.213.77.0/24" in rule]
    assert remote and all(r[0] == "hostssl" and r[-1] == "scram-sha-256" for r in remote), remote
    assert {r[-1] for r in rules} <= {"peer", "scram-sha-256"}
    assert _sql("SHOW password_encryption") == "scram-sha-256"


def test_gateway_sessions_are_encrypted():
    rows = _sql(
        "SELECT DISTINCT host(a.client_addr), s.ssl FROM pg_stat_activity a"
        " JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'dicom_gw'"
    )
    sessions = dict(line.split("|") for line in rows.splitlines())
    assert set(GATEWAY_ADDRESSES.values()) <= set(sessions), sessions
    assert set(sessions.values()) == {"t"}, sessions


@pytest.mark.parametrize("sslmode", ["disable", "require"])
def test_gateway_connects_only_with_tls(sslmode):
    probe = (
        "import psycopg, pathlib;"
        "password = pathlib.Path('/etc/dicom-gw/secrets/db.password').read_text().strip();"
        f"psycopg.connect(host='db1', dbname='dicom_gw', user='dicom_gw', sslmode='{sslmode}',"
        " password=password, connect_timeout=10).close()"
    )
    cmd = _host("dicom-gw-gw1").run("/opt/dicom-gw/venv/bin/python -c %s", probe)
    if sslmode == "require":
        assert cmd.rc == 0, cmd.stderr
    else:
        assert cmd.rc != 0 and "no encryption" in cmd.stderr, cmd.stderr


# --- the gateways share keys, account numbers and storage ------------------------------------


def test_gateways_share_keys_and_account():
    seen = {}
    for name in GATEWAYS:
        host = _host(name)
        sums = host.run(
            "cd /etc/dicom-gw/secrets && sha256sum phi.key jwt.key db.password"
        ).stdout
        ids = host.run("id -u dicom-gw; id -g dicom-gw").stdout.split()
        seen[name] = (sums, ids)
        for secret in ["phi.key", "jwt.key", "db.password"]:
            f = host.file(f"/etc/dicom-gw/secrets/{secret}")
            assert (f.user, f.mode) == ("dicom-gw", 0o600)
    assert seen[GATEWAYS[0]] == seen[GATEWAYS[1]], seen
    assert seen[GATEWAYS[0]][1] == ["950", "950"]


def test_storage_is_shared_between_the_gateways():
    probe = f"{STORAGE}/.molecule-shared-probe-{RUN}"
    assert _host(GATEWAYS[0]).run("runuser -u dicom-gw -- sh -c 'echo gw1 > %s'", probe).rc == 0
    other = _host(GATEWAYS[1]).file(probe)
    assert other.content_string.strip() == "gw1" and other.user == "dicom-gw"
    assert _host(GATEWAYS[1]).run("runuser -u dicom-gw -- rm %s", probe).rc == 0


# --- the API through the proxy ---------------------------------------------------------------


def _proxy_curl(args: str):
    return _host(PROXY).run(f"curl -sS -k --resolve {SERVER_NAME}:443:127.0.0.1 {args}")


def test_api_listens_on_tcp_for_the_proxy():
    for name in GATEWAYS:
        out = _host(name).run("ss -Htln 'sport = :8080'").stdout
        assert "0.0.0.0:8080" in out, (name, out)


def test_api_balanced_over_both_gateways_with_shared_tokens():
    password = _host(GATEWAYS[0]).file("/etc/dicom-gw/private/admin.password").content_string
    body = json.dumps({"username": "admin", "password": password.strip()})
    login = _proxy_curl(
        f"-f -H 'Content-Type: application/json' -d '{body}'"
        f" https://{SERVER_NAME}/api/v1/auth/login"
    )
    assert login.rc == 0, login.stderr
    token = json.loads(login.stdout)["access_token"]
    since = _host(PROXY).run("date -u '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    # One token, many requests: each gateway must accept what the other issued (shared JWT key).
    codes = [
        _proxy_curl(
            f"-o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer {token}'"
            f" https://{SERVER_NAME}/api/v1/auth/me"
        ).stdout
        for _ in range(8)
    ]
    assert codes == ["200"] * 8, codes
    for name in GATEWAYS:
        journal = _host(name).run(
            "journalctl -u dicom-gw-api.service --since %s --no-pager -o cat", since
        ).stdout
        assert "/api/v1/auth/me" in journal, f"{name} served no API request"
    ready = _proxy_curl(f"-f https://{SERVER_NAME}/readyz")
    assert ready.rc == 0, ready.stdout + ready.stderr


# --- DICOM through the proxy -----------------------------------------------------------------

DUMP = """
(0008,0016) UI =SecondaryCaptureImageStorage
(0008,0018) UI [{sop_uid}]
(0008,0020) DA [20260101]
(0008,0060) CS [OT]
(0010,0010) PN [Molecule^Distributed]
(0010,0020) LO [MOLECULE-2]
(0020,000d) UI [{study_uid}]
(0020,000e) UI [{study_uid}.{series}]
(0020,0013) IS [1]
(0028,0002) US 1
(0028,0004) CS [MONOCHROME2]
(0028,0010) US 2
(0028,0011) US 2
(0028,0100) US 8
(0028,0101) US 8
(0028,0102) US 7
(0028,0103) US 0
(7fe0,0010) OB 00\\01\\02\\03
"""

DATASET_OFFSET = """
import sys
def dataset(path):
    data = open(path, 'rb').read()
    assert data[128:132] == b'DICM'
    start = 144 + int.from_bytes(data[140:144], 'little')
    return data[start:]
print(dataset(sys.argv[1]) == dataset(sys.argv[2]))
"""


def _make_series(series: int, count: int) -> tuple[str, list[str]]:
    """count files on the proxy, one SOP Instance UID each; returns (directory, uids)."""
    proxy = _host(PROXY)
    directory = f"/tmp/molecule-dicom/{series}"
    proxy.run("rm -rf %s && mkdir -p %s", directory, directory)
    uids = [f"{STUDY_UID}.{series}.{i}" for i in range(1, count + 1)]
    template = DUMP.format(sop_uid="@UID@", study_uid=STUDY_UID, series=series)
    assert proxy.run("printf '%%s' %s > %s/template.dump", template, directory).rc == 0
    script = (
        f"cd {directory} && for i in $(seq 1 {count}); do"
        f" sed \"s/@UID@/{STUDY_UID}.{series}.$i/\" template.dump > $i.dump &&"
        " dump2dcm --write-xfer-little $i.dump $i.dcm || exit 1; done"
    )
    cmd = proxy.run("bash -c %s", script)
    assert cmd.rc == 0, cmd.stderr
    return directory, uids


def _storescu(path: str):
    return _host(PROXY).run(
        "storescu -v -aet %s -aec %s 127.0.0.1 %s %s",
        CALLING_AE,
        CALLED_AE,
        str(DICOM_PORT),
        path,
    )


@pytest.fixture(scope="module")
def sink():
    """A dcmtk storescp on the proxy host as the destination, routed for CALLING_AE."""
    proxy = _host(PROXY)
    proxy.run("systemctl stop molecule-sink.service; rm -rf /tmp/sink; mkdir -p /tmp/sink")
    # Test fixture: the deployed firewall opens only the proxy's own ports.
    rule = proxy.run(
        "nft add rule inet dicom_gw input tcp dport %s accept comment molecule-sink",
        str(SINK_PORT),
    )
    assert rule.rc == 0, rule.stderr
    # +uf: a second delivery of one instance becomes a second file, so duplicates are counted.
    cmd = proxy.run(
        "systemd-run --unit molecule-sink storescp +uf --output-directory /tmp/sink -aet SINK %s",
        str(SINK_PORT),
    )
    assert cmd.rc == 0, cmd.stderr
    gw = _host(GATEWAYS[0])
    if "sink" not in gw.run(f"{CLI} destination list").stdout:
        cmd = gw.run(f"{CLI} destination add sink --ae-title SINK --host proxy1 --port {SINK_PORT}")
        assert cmd.rc == 0, cmd.stdout + cmd.stderr
    if "to-sink" not in gw.run(f"{CLI} rule list").stdout:
        cmd = gw.run(f"{CLI} rule add to-sink --to sink --when calling_ae:equals:{CALLING_AE}")
        assert cmd.rc == 0, cmd.stdout + cmd.stderr
    yield "/tmp/sink"
    proxy.run("systemctl stop molecule-sink.service")


def _sink_index() -> dict[str, list[str]]:
    """SOP Instance UID -> the sink's files holding it (one per delivery: storescp +uf)."""
    out = _host(PROXY).run(
        "cd /tmp/sink && for f in *; do [ -f \"$f\" ] || continue;"
        " printf '%s ' \"/tmp/sink/$f\"; dcmdump -q +P 0008,0018 \"$f\" | head -1; done"
    ).stdout
    index: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = re.match(r"(\S+) \(0008,0018\) UI \[([0-9.]+)\]", line)
        if match:
            index.setdefault(match.group(2), []).append(match.group(1))
    return index


def _indexed_counts(uids: list[str]) -> dict[str, int]:
    rows = _sql(
        "SELECT sop_instance_uid, count(*) FROM instances WHERE sop_instance_uid IN ("
        + ",".join(f"'{uid}'" for uid in uids)
        + ") GROUP BY sop_instance_uid"
    )
    return {line.split("|")[0]: int(line.split("|")[1]) for line in rows.splitlines()}


def _sent_counts(uids: list[str]) -> dict[str, int]:
    rows = _sql(
        "SELECT i.sop_instance_uid, count(*) FROM deliveries d JOIN instances i"
        " ON i.id = d.instance_id WHERE d.state = 'sent' AND i.sop_instance_uid IN ("
        + ",".join(f"'{uid}'" for uid in uids)
        + ") GROUP BY i.sop_instance_uid"
    )
    return {line.split("|")[0]: int(line.split("|")[1]) for line in rows.splitlines()}


def _upstreams_since(line_count: int) -> list[str]:
    log = _host(PROXY).file("/var/log/nginx/dicom-gw-dicom.log").content_string.splitlines()
    return re.findall(r"upstream=(\S+)", "\n".join(log[line_count:]))


def _log_lines() -> int:
    out = _host(PROXY).run("cat /var/log/nginx/dicom-gw-dicom.log 2>/dev/null | wc -l").stdout
    return int(out.strip() or 0)


def test_dicom_through_the_proxy_reaches_both_gateways_once(sink):
    directory, uids = _make_series(1, 10)
    before = _log_lines()
    for i in range(1, len(uids) + 1):  # one association per instance
        cmd = _storescu(f"{directory}/{i}.dcm")
        assert cmd.rc == 0 and "Received Store Response (Success)" in cmd.stdout + cmd.stderr, (
            cmd.stdout + cmd.stderr
        )
    upstreams = _upstreams_since(before)
    assert len(upstreams) == len(uids)
    for name, address in GATEWAY_ADDRESSES.items():
        assert f"{address}:{DICOM_PORT}" in upstreams, f"no association reached {name}: {upstreams}"

    _wait(lambda: len(_indexed_counts(uids)) == len(uids), 120, "every instance indexed")
    assert _indexed_counts(uids) == {uid: 1 for uid in uids}  # indexed exactly once
    _wait(lambda: len(_sent_counts(uids)) == len(uids), 120, "every instance delivered")
    assert _sent_counts(uids) == {uid: 1 for uid in uids}
    index = _wait(
        lambda: (lambda found: found if set(uids) <= set(found) else None)(_sink_index()),
        60,
        "every instance in the sink",
    )
    for i, uid in enumerate(uids, start=1):
        received = index[uid]
        assert len(received) == 1, received  # forwarded exactly once
        same = _host(PROXY).run(
            "python3 -c %s %s %s", DATASET_OFFSET, f"{directory}/{i}.dcm", received[0]
        )
        assert same.stdout.strip() == "True", f"{uid}: forwarded dataset differs"


# --- one gateway host stops while associations keep arriving ---------------------------------

SENDER = """
cd {directory}
: > acks
for i in $(seq 1 {count}); do
    if storescu -v -aet {calling} -aec {called} 127.0.0.1 {port} $i.dcm > $i.log 2>&1 \\
        && grep -q 'Received Store Response (Success)' $i.log; then
        echo $i >> acks
    fi
    echo $i >> attempted
done
"""


def test_stopping_a_gateway_host_loses_nothing_acknowledged(sink):
    count = 60
    directory, uids = _make_series(2, count)
    proxy = _host(PROXY)
    script = SENDER.format(
        directory=directory, count=count, calling=CALLING_AE, called=CALLED_AE, port=DICOM_PORT
    )
    proxy.run("systemctl reset-failed molecule-sender.service")
    cmd = proxy.run("systemd-run --unit molecule-sender bash -c %s", script)
    assert cmd.rc == 0, cmd.stderr

    def acks() -> list[int]:
        content = proxy.run("cat %s/acks 2>/dev/null", directory).stdout
        return [int(x) for x in content.split()]

    def attempted() -> int:
        return len(proxy.run("cat %s/attempted 2>/dev/null", directory).stdout.split())

    _wait(lambda: len(acks()) >= 5, 120, "the first acknowledged stores")
    stopped_after = attempted()
    stop = _podman("stop", "--time", "10", GATEWAYS[1])
    assert stop.returncode == 0, stop.stderr
    _wait(
        lambda: proxy.run("systemctl is-active molecule-sender.service").stdout.strip()
        != "active",
        300,
        "the sender to finish",
        interval=2,
    )
    acknowledged = [uids[i - 1] for i in acks()]
    assert stopped_after < count, "the sender finished before the gateway host was stopped"
    assert len(acknowledged) > stopped_after, "nothing was acknowledged after the stop"

    # Everything acknowledged: indexed exactly once and delivered, even what the stopped host
    # had received or claimed (its leases lapse and the surviving host takes the work over).
    _wait(
        lambda: len(_indexed_counts(acknowledged)) == len(acknowledged),
        180,
        "every acknowledged instance indexed",
        interval=2,
    )
    assert _indexed_counts(acknowledged) == {uid: 1 for uid in acknowledged}
    _wait(
        lambda: len(_sent_counts(acknowledged)) == len(acknowledged),
        180,
        "every acknowledged instance delivered",
        interval=2,
    )
    index = _wait(
        lambda: (lambda found: found if set(acknowledged) <= set(found) else None)(_sink_index()),
        60,
        "every acknowledged instance in the sink",
    )
    # At-least-once delivery (docs/reliability.md): a delivery the stopped host had in flight may
    # arrive twice; report how many did.
    repeated = {uid: len(index[uid]) for uid in acknowledged if len(index[uid]) > 1}
    print(f"{len(acknowledged)} acknowledged of {count}; delivered twice: {repeated}")

    # The stopped host comes back and its start-up recovery on the shared storage records nothing
    # twice.
    start = _podman("start", GATEWAYS[1])
    assert start.returncode == 0, start.stderr
    gw2 = _host(GATEWAYS[1])
    for unit in GATEWAY_SERVICES:
        _wait(
            lambda unit=unit: gw2.run("systemctl is-active %s", unit).stdout.strip() == "active",
            120,
            f"{unit} active again on {GATEWAYS[1]}",
            interval=2,
        )
    assert _sql("SELECT count(*) FROM ingest_jobs WHERE source = 'recovery'") == "0"
    duplicates = _sql(
        "SELECT count(*) FROM (SELECT sop_instance_uid FROM instances"
        f" WHERE sop_instance_uid LIKE '{STUDY_UID}.%' GROUP BY 1 HAVING count(*) > 1) d"
    )
    assert duplicates == "0"
