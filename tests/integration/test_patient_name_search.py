"""Patient name search over encrypted names: keyed trigram hashes narrow, the decrypt decides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from dicom_gw.security.phi import load_phi_key
from dicom_gw.services.patients import backfill_name_grams, name_query, patients_matching_name
from tests.conftest import Gateway
from tests.dicom_data import ct_series
from tests.support import storescu

NAMES = ["Doe^Jane", "Smith^John", "O'Brien^Mary-Ann", "50%_Off^Sale", "Müller^Zoë"]


def _names_found(
    conn: psycopg.Connection[tuple[object, ...]], gateway: Gateway, term: str
) -> set[str]:
    phi = load_phi_key(gateway.root / "secrets" / "phi.key")
    ids = patients_matching_name(conn, phi, term)
    rows = conn.execute(
        "SELECT pgp_sym_decrypt(patient_name_enc, %s) FROM patients WHERE id = ANY(%s)",
        (phi.passphrase, ids),
    )
    return {str(name) for (name,) in rows}


def test_name_search_finds_every_substring_and_nothing_else(
    gateway: Gateway, tmp_path: Path
) -> None:
    files = [
        ct_series(tmp_path / str(seed), count=1, size=16, seed=seed, patient_name=name)[0]
        for seed, name in enumerate(NAMES, start=1)
    ]
    assert storescu(gateway.port, *files).returncode == 0
    gateway.wait_indexed(len(NAMES))
    assert gateway.sql("SELECT count(*) FROM patients WHERE name_grams IS NULL") == [(0,)]

    with psycopg.connect(gateway.db_url.replace("+psycopg", ""), autocommit=True) as conn:
        assert _names_found(conn, gateway, "doe") == {"Doe^Jane"}
        assert _names_found(conn, gateway, "OE^JA") == {"Doe^Jane"}  # across components
        assert _names_found(conn, gateway, "mary-ann") == {"O'Brien^Mary-Ann"}
        assert _names_found(conn, gateway, "o") == {
            "Doe^Jane",
            "Smith^John",
            "O'Brien^Mary-Ann",
            "50%_Off^Sale",
            "Müller^Zoë",
        }
        assert _names_found(conn, gateway, "jo") == {"Smith^John"}  # too short to hash: decrypts
        assert _names_found(conn, gateway, "%_o") == {"50%_Off^Sale"}  # LIKE signs are literal
        assert _names_found(conn, gateway, "ÜLLER") == {"Müller^Zoë"}
        assert _names_found(conn, gateway, "doe^jx") == set()
        assert _names_found(conn, gateway, "nobody") == set()


def test_rows_from_before_the_index_are_found_then_backfilled(
    gateway: Gateway, tmp_path: Path
) -> None:
    files = [
        ct_series(tmp_path / str(seed), count=1, size=16, seed=seed, patient_name=name)[0]
        for seed, name in enumerate(NAMES[:2], start=1)
    ]
    assert storescu(gateway.port, *files).returncode == 0
    gateway.wait_indexed(2)
    phi = load_phi_key(gateway.root / "secrets" / "phi.key")
    with psycopg.connect(gateway.db_url.replace("+psycopg", ""), autocommit=True) as conn:
        # As a database migrated to 0005 holds them until `dicom-gw migrate` has the key.
        conn.execute("UPDATE patients SET name_grams = NULL")
        assert _names_found(conn, gateway, "smith") == {"Smith^John"}

    assert gateway.cli("migrate").returncode == 0
    stored = gateway.sql(
        "SELECT pgp_sym_decrypt(patient_name_enc, %s), name_grams FROM patients",
        (phi.passphrase,),
    )
    assert {name: grams for name, grams in stored} == {
        name: phi.name_grams(name) for name in NAMES[:2]
    }
    with psycopg.connect(gateway.db_url.replace("+psycopg", ""), autocommit=True) as conn:
        assert _names_found(conn, gateway, "smith") == {"Smith^John"}
        assert backfill_name_grams(conn, phi) == 0


def test_the_name_query_can_use_the_trigram_index(gateway: Gateway) -> None:
    phi = load_phi_key(gateway.root / "secrets" / "phi.key")
    query, params = name_query(phi, "smith")
    with psycopg.connect(gateway.db_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(str(row[0]) for row in conn.execute(f"EXPLAIN {query}", params))
    assert "ix_patients_name_grams" in plan and "ix_patients_name_grams_missing" in plan, plan


def test_migrate_on_an_empty_index_does_not_need_the_key(
    make_gateway: Callable[..., Gateway],
) -> None:
    gateway = make_gateway()
    (gateway.root / "secrets" / "phi.key").unlink()
    result = gateway.cli("migrate")
    assert result.returncode == 0, result.stderr
