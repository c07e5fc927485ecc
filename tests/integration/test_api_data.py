"""Studies, destinations, rules, queue and audit through the API, on data the SCP received."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pydicom
import pytest

from tests.api_support import Api, api
from tests.conftest import free_port
from tests.dicom_data import ct_series
from tests.sinks import StoreSCP
from tests.support import storescu, wait_for

__all__ = ["api"]


def test_a_received_study_is_found_with_its_delivery_states(api: Api, tmp_path: Path) -> None:
    gw = api.gateway
    gw.start_scp()
    gw.start_ingest()
    gw.start_forward()
    sink = StoreSCP("SINK", free_port(), tmp_path / "sink").start()
    try:
        created = api.as_role(
            "admin",
            "POST",
            "/api/v1/destinations",
            json={"name": "archive", "ae_title": "SINK", "host": "127.0.0.1", "port": sink.port},
        )
        assert created.status_code == 201, created.text  # type: ignore[attr-defined]
        rule = api.as_role(
            "admin",
            "POST",
            "/api/v1/rules",
            json={
                "name": "ct",
                "conditions": [{"field": "modality", "op": "equals", "value": "CT"}],
                "destinations": ["archive"],
            },
        )
        assert rule.status_code == 201, rule.text  # type: ignore[attr-defined]
        files = ct_series(tmp_path / "ct", count=3, size=32, patient_name="Doe^Jane")
        assert storescu(gw.port, *files).returncode == 0
        wait_for(lambda: len(sink.received()) == 3, what="forwarding")
        wait_for(lambda: gw.delivery_states() == {"sent": 3}, what="sent recorded")
    finally:
        sink.stop()

    # Search by exact patient ID goes through the blind index; PHI is ciphertext in SQL.
    ds = pydicom.dcmread(files[0])
    found = api.as_role("viewer", "GET", "/api/v1/studies", params={"patient_id": ds.PatientID})
    body = found.json()  # type: ignore[attr-defined]
    assert body["total"] == 1
    study = body["items"][0]
    assert study["patient_name"] == "Doe^Jane" and study["instance_count"] == 3
    assert study["deliveries"] == {"sent": 3}
    [(raw_id,)] = gw.sql("SELECT patient_id_enc FROM patients")
    assert ds.PatientID.encode() not in bytes(raw_id)
    assert (
        api.as_role("viewer", "GET", "/api/v1/studies", params={"patient_id": "nope"}).json()[
            "total"
        ]
        == 0
    )  # type: ignore[attr-defined]
    assert (
        api.as_role("viewer", "GET", "/api/v1/studies", params={"patient_name": "doe"}).json()[
            "total"
        ]
        == 1
    )  # type: ignore[attr-defined]

    detail = api.as_role("viewer", "GET", f"/api/v1/studies/{study['id']}").json()  # type: ignore[attr-defined]
    instances = detail["series"][0]["instances"]
    assert len(instances) == 3
    assert all(i["deliveries"][0]["state"] == "sent" for i in instances)
    assert detail["destinations"] == [
        {"destination_id": 1, "destination": "archive", "states": {"sent": 3}}
    ]

    # Download: the stored bytes, for operators; viewers are refused.
    instance_id = instances[0]["id"]
    assert api.as_role("viewer", "GET", f"/api/v1/instances/{instance_id}/file").status_code == 403  # type: ignore[attr-defined]
    download = api.as_role("operator", "GET", f"/api/v1/instances/{instance_id}/file")
    assert download.status_code == 200  # type: ignore[attr-defined]
    [(path,)] = gw.sql("SELECT storage_path FROM instances WHERE id = %s", (instance_id,))
    assert download.content == (gw.storage / path).read_bytes()  # type: ignore[attr-defined]

    # Replay is an operator action, recorded with its reason.
    replay = api.as_role(
        "operator", "POST", f"/api/v1/studies/{study['id']}/replay", json={"destination_id": 1}
    )
    assert replay.json() == {"queued": 3}  # type: ignore[attr-defined]
    actions = {a for (a,) in gw.sql("SELECT action FROM audit_log")}
    assert {
        "phi.study_search",
        "phi.study_view",
        "phi.instance_download",
        "queue.replay",
        "destination.create",
        "rule.create",
    } <= actions


def test_every_mutation_is_audited_and_the_log_cannot_be_rewritten(api: Api) -> None:
    gw = api.gateway
    calls = [
        (
            "POST",
            "/api/v1/destinations",
            {"name": "d1", "ae_title": "D1", "host": "h", "port": 104},
            201,
        ),
        ("PATCH", "/api/v1/destinations/1", {"enabled": False}, 200),
        ("POST", "/api/v1/rules", {"name": "r1", "destinations": ["d1"]}, 201),
        ("PUT", "/api/v1/rules/1", {"name": "r1", "destinations": ["d1"], "match": "any"}, 200),
        ("POST", "/api/v1/rules/reorder", {"ids": [1]}, 204),
        ("DELETE", "/api/v1/rules/1", None, 204),
        ("DELETE", "/api/v1/destinations/1", None, 204),
        (
            "POST",
            "/api/v1/users",
            {"username": "nurse", "password": "a long enough secret", "roles": ["viewer"]},
            201,
        ),
        ("PATCH", "/api/v1/users/5", {"roles": ["viewer", "operator"]}, 200),
        ("POST", "/api/v1/users/5/password", {"password": "another long secret"}, 204),
        ("PATCH", "/api/v1/settings", {"retention_hours": 24}, 200),
        ("POST", "/api/v1/queue/retry", {"ids": [1]}, 200),
        ("POST", "/api/v1/queue/cancel", {"ids": [1]}, 200),
    ]
    expected_actions = [
        "destination.create",
        "destination.update",
        "rule.create",
        "rule.update",
        "rule.reorder",
        "rule.delete",
        "destination.delete",
        "user.create",
        "user.update",
        "user.password_reset",
        "settings.update",
        "queue.retry",
        "queue.cancel",
    ]
    for (method, url, body, status), action in zip(calls, expected_actions, strict=True):
        before = gw.sql("SELECT count(*) FROM audit_log WHERE action = %s", (action,))[0][0]
        response = api.as_role("admin", method, url, json=body)
        assert response.status_code == status, (url, response.text)  # type: ignore[attr-defined]
        after = gw.sql("SELECT count(*) FROM audit_log WHERE action = %s", (action,))[0][0]
        assert after == before + 1, action
    entry = gw.sql(
        "SELECT actor, roles, host(source_ip), outcome FROM audit_log"
        " WHERE action = 'settings.update'"
    )
    assert entry == [("admin", ["admin"], None, "success")]

    verdict = api.as_role("auditor", "GET", "/api/v1/audit/verify").json()  # type: ignore[attr-defined]
    assert verdict["ok"] is True and verdict["checked"] > 13
    with pytest.raises(psycopg.errors.RaiseException):
        gw.sql("UPDATE audit_log SET outcome = 'failure' WHERE id = 3")
    with pytest.raises(psycopg.errors.RaiseException):
        gw.sql("DELETE FROM audit_log WHERE id = 3")

    # Someone with superuser rights disables the trigger and edits history: verify names it.
    gw.sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
    gw.sql("UPDATE audit_log SET actor = 'someone-else' WHERE id = 7")
    gw.sql("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    broken = api.as_role("auditor", "GET", "/api/v1/audit/verify").json()  # type: ignore[attr-defined]
    assert broken["ok"] is False and broken["first_broken_id"] == 7

    search = api.as_role("auditor", "GET", "/api/v1/audit", params={"q": "nurse"}).json()  # type: ignore[attr-defined]
    assert search["total"] >= 1
    export = api.as_role("auditor", "GET", "/api/v1/audit/export", params={"action": "rule.create"})
    lines = export.text.strip().splitlines()  # type: ignore[attr-defined]
    assert lines[0].startswith("id,created_at,actor") and len(lines) == 2
    assert api.as_role("auditor", "GET", "/api/v1/studies").status_code == 403  # type: ignore[attr-defined]


def test_bad_input_gets_a_clear_4xx(api: Api) -> None:
    cases = [
        (
            "POST",
            "/api/v1/destinations",
            {"name": "x", "ae_title": "A" * 17, "host": "h", "port": 0},
        ),
        (
            "POST",
            "/api/v1/rules",
            {
                "name": "x",
                "destinations": ["none"],
                "conditions": [{"field": "modality", "op": "regex", "value": "(["}],
            },
        ),
        ("POST", "/api/v1/rules", {"name": "x", "destinations": ["none"]}),
        ("PATCH", "/api/v1/settings", {"disk_watermark_percent": 150}),
        ("POST", "/api/v1/queue/retry", {}),
    ]
    for method, url, body in cases:
        response = api.as_role("admin", method, url, json=body)
        assert 400 <= response.status_code < 500, (url, response.text)  # type: ignore[attr-defined]
        assert response.json()["detail"]  # type: ignore[attr-defined]
    unknown = api.as_role(
        "admin", "POST", "/api/v1/rules", json={"name": "x", "destinations": ["none"]}
    )
    assert unknown.json()["detail"][0]["loc"][-2:] == ["destinations", "0"]  # type: ignore[attr-defined]
    malformed = api.client.post(
        "/api/v1/destinations",
        content=b"{not json",
        headers=api.headers("admin") | {"Content-Type": "application/json"},
    )
    assert malformed.status_code == 422
    huge = api.client.post(
        "/api/v1/auth/login",
        content=b"x" * 10,
        headers={"Content-Length": str(10**10), "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    for injection in ("' OR 1=1 --", "%", "\\", "'; DROP TABLE studies; --"):
        response = api.as_role(
            "viewer",
            "GET",
            "/api/v1/studies",
            params={"patient_name": injection, "accession_number": injection},
        )
        assert response.status_code == 200 and response.json()["total"] == 0  # type: ignore[attr-defined]
    traversal = api.as_role("operator", "GET", "/api/v1/instances/..%2F..%2Fetc%2Fpasswd/file")
    assert traversal.status_code in (404, 422)  # type: ignore[attr-defined]


def test_audit_entries_are_forwarded_as_rfc5424_syslog(make_gateway: object) -> None:
    import socket as socketlib

    from fastapi.testclient import TestClient

    from dicom_gw.api.app import create_app
    from dicom_gw.config import load_settings

    collector = socketlib.socket(socketlib.AF_INET, socketlib.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(10)
    gw = make_gateway(
        audit={
            "syslog_host": "127.0.0.1",  # type: ignore[operator]
            "syslog_port": collector.getsockname()[1],
        }
    )
    with TestClient(create_app(load_settings(gw.config))) as client:
        client.post("/api/v1/auth/login", json={"username": "ghost", "password": "nope"})
    message = collector.recv(4096).decode()
    collector.close()
    assert message.startswith("<108>1 ")  # facility 13 (log audit), severity 4 (warning)
    assert 'action="auth.login"' in message and 'outcome="failure"' in message
    assert "nope" not in message


def test_runtime_settings_change_the_running_scp(api: Api) -> None:
    gw = api.gateway
    gw.start_scp()
    assert not gw.echo_ok(calling="NEWMODALITY")
    callers = [{"ae_title": a, "networks": []} for a in ("STORESCU", "ECHOSCU", "NEWMODALITY")]
    response = api.as_role("admin", "PATCH", "/api/v1/settings", json={"allowed_callers": callers})
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    assert [c["ae_title"] for c in response.json()["allowed_callers"]][-1] == "NEWMODALITY"  # type: ignore[attr-defined]
    # Receivers re-read the live settings every few seconds: no restart needed.
    wait_for(lambda: gw.echo_ok(calling="NEWMODALITY"), timeout=40, what="the new caller accepted")
