"""Patient lookups on encrypted PHI: the name search and the upkeep of its trigram index.

Patient names are stored encrypted (pgcrypto), so a substring search cannot use an ordinary
index. Each patient row carries ``name_grams``, keyed 32-bit hashes of its name's trigrams
(PhiKey.name_grams): a term of three characters or more first selects, through a GIN index, the
patients whose hashes contain all of the term's, and only those are decrypted and compared.
Shorter terms, and rows written before the hashes existed, are compared by decrypting.
"""

from __future__ import annotations

from typing import Any

import psycopg

from dicom_gw.security.phi import PhiKey

BACKFILL_BATCH = 1000


def escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def patients_matching_name(
    conn: psycopg.Connection[Any], phi: PhiKey, name: str, among: list[int] | None = None
) -> list[int]:
    """Ids of the patients whose name contains ``name``, case-insensitively (among ``among``)."""
    query, params = name_query(phi, name, among)
    return [int(row[0]) for row in conn.execute(query, params)]


def name_query(
    phi: PhiKey, name: str, among: list[int] | None = None
) -> tuple[str, dict[str, Any]]:
    """The SQL of patients_matching_name: hashes select candidates, the decrypt decides."""
    params: dict[str, Any] = {"phi": phi.passphrase, "name": f"%{escape_like(name)}%"}
    clauses = ["pgp_sym_decrypt(patient_name_enc, %(phi)s) ILIKE %(name)s"]
    grams = phi.name_grams(name)
    if grams:
        clauses.append("(name_grams @> %(grams)s::int[] OR name_grams IS NULL)")
        params["grams"] = grams
    if among is not None:
        clauses.append("id = ANY(%(ids)s::bigint[])")
        params["ids"] = among
    return f"SELECT id FROM patients WHERE {' AND '.join(clauses)}", params


def names_to_hash(conn: psycopg.Connection[Any]) -> bool:
    """Whether any patient row still lacks its name hashes (written before migration 0005)."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM patients WHERE name_grams IS NULL)").fetchone()
    return bool(row and row[0])


def backfill_name_grams(conn: psycopg.Connection[Any], phi: PhiKey) -> int:
    """Hash the names of rows indexed before migration 0005; returns how many were filled.

    In batches, each its own transaction, so a large registry does not hold one long lock and an
    interrupted run resumes where it stopped. The ingest worker writes the hashes for new rows.
    """
    filled = 0
    while True:
        with conn.transaction():
            rows = conn.execute(
                "SELECT id, pgp_sym_decrypt(patient_name_enc, %s) FROM patients"
                " WHERE name_grams IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (phi.passphrase, BACKFILL_BATCH),
            ).fetchall()
            if not rows:
                return filled
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE patients SET name_grams = %s WHERE id = %s",
                    [(phi.name_grams(name), patient_id) for patient_id, name in rows],
                )
            filled += len(rows)
