"""Study search and detail for the API, decrypting PHI columns with the key held outside the DB.

Patient ID search is exact and goes through the blind index (a keyed hash), so it uses an index
without ever decrypting; patient name search narrows by keyed trigram hashes and decrypts only
those candidates (services/patients.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dicom_gw.security.phi import PhiKey
from dicom_gw.services.patients import patients_matching_name

SORTABLE = {
    "last_received_at": "st.last_received_at",
    "first_received_at": "st.first_received_at",
    "study_date": "st.study_date",
    "accession_number": "st.accession_number",
    "calling_ae": "st.calling_ae",
    "modalities": "st.modalities",
    "instance_count": "st.instance_count",
}
# Sorts on PHI decrypt every matching patient: the one case where the page query joins them.
PHI_SORTS = {
    "patient_name": "pgp_sym_decrypt(p.patient_name_enc, %(phi)s)",
    "patient_id": "pgp_sym_decrypt(p.patient_id_enc, %(phi)s)",
}
DELIVERY_STATES = ("held", "pending", "claimed", "retry", "sent", "dead", "cancelled")


@dataclass(frozen=True)
class StudyFilters:
    patient_name: str | None = None
    patient_id: str | None = None
    issuer_of_patient_id: str = ""
    modality: str | None = None
    accession_number: str | None = None
    calling_ae: str | None = None
    study_date_from: dt.date | None = None
    study_date_to: dt.date | None = None
    received_from: dt.datetime | None = None
    received_to: dt.datetime | None = None
    delivery_state: str | None = None


def _phi_columns() -> str:
    return (
        "pgp_sym_decrypt(p.patient_name_enc, %(phi)s) AS patient_name,"
        " pgp_sym_decrypt(p.patient_id_enc, %(phi)s) AS patient_id,"
        " pgp_sym_decrypt(p.birth_date_enc, %(phi)s) AS birth_date"
    )


def search_studies(
    conn: psycopg.Connection[Any],
    phi: PhiKey,
    filters: StudyFilters,
    sort: str,
    descending: bool,
    page: int,
    page_size: int,
) -> tuple[list[dict[str, Any]], int]:
    """One page of studies and the total count.

    Decrypting is what costs here (a key derivation and a cipher set-up per value), so the queries
    decrypt as little as they can: the patient filters are resolved to patient ids once per
    request, the count and the page are chosen on the studies table alone, and only the page's
    rows are decrypted. Only a sort by patient name or ID decrypts every match.
    """
    clauses = ["TRUE"]
    params: dict[str, Any] = {"phi": phi.passphrase}
    with conn.cursor(row_factory=dict_row) as cur:
        patients: list[int] | None = None
        if filters.patient_id:
            key = phi.blind_index(filters.patient_id, filters.issuer_of_patient_id)
            found = cur.execute("SELECT id FROM patients WHERE patient_key = %s", (key,))
            patients = [r["id"] for r in found]
        if filters.patient_name and patients != []:
            patients = patients_matching_name(conn, phi, filters.patient_name, among=patients)
        if patients is not None:
            clauses.append("st.patient_id = ANY(%(patients)s::bigint[])")
            params["patients"] = patients
        if filters.modality:
            clauses.append("%(modality)s = ANY(st.modalities)")
            params["modality"] = filters.modality
        if filters.accession_number:
            clauses.append("st.accession_number = %(accession)s")
            params["accession"] = filters.accession_number
        if filters.calling_ae:
            clauses.append("st.calling_ae = %(calling_ae)s")
            params["calling_ae"] = filters.calling_ae
        for column, name, op in (
            ("st.study_date", "study_date_from", ">="),
            ("st.study_date", "study_date_to", "<="),
            ("st.last_received_at", "received_from", ">="),
            ("st.first_received_at", "received_to", "<="),
        ):
            value = getattr(filters, name)
            if value is not None:
                clauses.append(f"{column} {op} %({name})s")
                params[name] = value
        if filters.delivery_state:
            clauses.append(
                "EXISTS (SELECT 1 FROM deliveries d WHERE d.study_id = st.id"
                " AND d.state::text = %(delivery_state)s)"
            )
            params["delivery_state"] = filters.delivery_state
        where = " AND ".join(clauses)
        key_expr = PHI_SORTS.get(sort) or SORTABLE.get(sort, "st.last_received_at")
        join = "LEFT JOIN patients p ON p.id = st.patient_id" if sort in PHI_SORTS else ""
        direction = "DESC" if descending else "ASC"
        total = cur.execute(
            f"SELECT count(*) AS n FROM studies st WHERE {where}", params
        ).fetchone()
        rows = cur.execute(
            f"""WITH page AS MATERIALIZED (
                    SELECT st.id, {key_expr} AS sort_key FROM studies st {join}
                     WHERE {where}
                     ORDER BY {key_expr} {direction} NULLS LAST, st.id {direction}
                     LIMIT %(limit)s OFFSET %(offset)s)
                SELECT st.id, st.study_instance_uid, {_phi_columns()}, st.study_date,
                       st.accession_number, st.study_description, st.modalities, st.calling_ae,
                       st.instance_count, st.first_received_at, st.last_received_at
                  FROM page JOIN studies st ON st.id = page.id
                  LEFT JOIN patients p ON p.id = st.patient_id
                 ORDER BY page.sort_key {direction} NULLS LAST, st.id {direction}""",
            params | {"limit": page_size, "offset": (page - 1) * page_size},
        ).fetchall()
        ids = [r["id"] for r in rows]
        states: dict[int, dict[str, int]] = {i: {} for i in ids}
        if ids:
            for row in cur.execute(
                "SELECT study_id, state::text AS state, count(*) AS n FROM deliveries"
                " WHERE study_id = ANY(%s) GROUP BY study_id, state",
                (ids,),
            ):
                states[row["study_id"]][row["state"]] = row["n"]
    for row in rows:
        row["deliveries"] = states.get(row["id"], {})
    return rows, int(total["n"]) if total else 0


def study_detail(
    conn: psycopg.Connection[Any], phi: PhiKey, study_id: int
) -> dict[str, Any] | None:
    params = {"phi": phi.passphrase, "id": study_id}
    with conn.cursor(row_factory=dict_row) as cur:
        study = cur.execute(
            f"""SELECT st.id, st.study_instance_uid, {_phi_columns()}, st.study_date,
                       st.accession_number, st.study_description, st.modalities, st.calling_ae,
                       st.instance_count, st.first_received_at, st.last_received_at
                  FROM studies st LEFT JOIN patients p ON p.id = st.patient_id
                 WHERE st.id = %(id)s""",
            params,
        ).fetchone()
        if study is None:
            return None
        series = cur.execute(
            "SELECT id, series_instance_uid, modality, series_number, series_description,"
            " instance_count FROM series WHERE study_id = %s ORDER BY series_number NULLS LAST, id",
            (study_id,),
        ).fetchall()
        instances = cur.execute(
            "SELECT i.id, i.series_id, i.sop_instance_uid, i.sop_class_uid, i.instance_number,"
            " i.transfer_syntax_uid, i.size_bytes, i.sha256, i.received_at, i.is_latest,"
            " i.deleted_at FROM instances i JOIN series se ON se.id = i.series_id"
            " WHERE se.study_id = %s ORDER BY i.instance_number NULLS LAST, i.id",
            (study_id,),
        ).fetchall()
        deliveries = cur.execute(
            "SELECT d.id, d.instance_id, d.destination_id, t.name AS destination,"
            " d.state::text AS state, d.attempts, d.last_error, d.last_status, d.sent_at,"
            " d.next_attempt_at FROM deliveries d JOIN destinations t ON t.id = d.destination_id"
            " WHERE d.study_id = %s ORDER BY d.id",
            (study_id,),
        ).fetchall()
    by_instance: dict[int, list[dict[str, Any]]] = {}
    summary: dict[int, dict[str, Any]] = {}
    for d in deliveries:
        by_instance.setdefault(d["instance_id"], []).append(d)
        entry = summary.setdefault(
            d["destination_id"],
            {"destination_id": d["destination_id"], "destination": d["destination"], "states": {}},
        )
        entry["states"][d["state"]] = entry["states"].get(d["state"], 0) + 1
    by_series: dict[int, list[dict[str, Any]]] = {}
    for instance in instances:
        instance["deliveries"] = by_instance.get(instance["id"], [])
        by_series.setdefault(instance.pop("series_id"), []).append(instance)
    for s in series:
        s["instances"] = by_series.get(s["id"], [])
    study["series"] = series
    study["destinations"] = list(summary.values())
    return study


def instance_file(conn: psycopg.Connection[Any], instance_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT i.id, i.storage_path, i.sop_instance_uid, i.sha256, i.deleted_at, se.study_id"
            " FROM instances i JOIN series se ON se.id = i.series_id WHERE i.id = %s",
            (instance_id,),
        ).fetchone()
