"""Indexing in batches: one transaction per batch, the same index as one by one, bad rows isolated.

Files are received while no ingest worker runs, so that the worker, when it starts, claims them
all in one batch: the test then sees exactly what a batch does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom

from dicom_gw.security.phi import load_phi_key
from tests.conftest import Gateway
from tests.dicom_data import ct_series
from tests.support import storescu


def _received_while_ingest_is_stopped(gateway: Gateway, files: list[Path]) -> None:
    gateway.start_scp()
    result = storescu(gateway.port, *files)
    assert result.returncode == 0, result.stderr
    [(pending,)] = gateway.sql("SELECT count(*) FROM ingest_jobs WHERE state = 'pending'")
    assert pending == len(files)


def test_a_batch_indexes_like_one_by_one(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = make_gateway()
    study = pydicom.uid.generate_uid()
    ct = ct_series(tmp_path / "ct", count=10, size=16, seed=1, study_uid=study)
    mr = ct_series(tmp_path / "mr", count=5, size=16, seed=2, modality="MR", study_uid=study)
    other = ct_series(tmp_path / "other", count=5, size=16, seed=3, patient_name="Other^Pat")
    # The first CT sent again: a new version of an instance indexed in an earlier batch.
    _received_while_ingest_is_stopped(gateway, [ct[0]])
    gateway.start_ingest()
    gateway.wait_indexed(1)
    gateway.stop("ingest")
    storescu_result = storescu(gateway.port, *ct, *mr, *other)
    assert storescu_result.returncode == 0, storescu_result.stderr

    gateway.start_ingest("ingest-batch")
    gateway.wait_indexed(21)

    assert "one by one" not in gateway.log("ingest-batch")  # it was indexed as one batch
    studies = dict(
        (uid, (count, modalities))
        for uid, count, modalities in gateway.sql(
            "SELECT study_instance_uid, instance_count, modalities FROM studies"
        )
    )
    other_study = str(pydicom.dcmread(other[0]).StudyInstanceUID)
    assert studies == {study: (15, ["CT", "MR"]), other_study: (5, ["CT"])}
    series_counts = sorted(count for (count,) in gateway.sql("SELECT instance_count FROM series"))
    assert series_counts == [5, 5, 10]
    [(instances, latest)] = gateway.sql(
        "SELECT count(*), count(*) FILTER (WHERE is_latest) FROM instances"
    )
    assert (instances, latest) == (21, 20)
    [(versions,)] = gateway.sql(
        "SELECT count(*) FROM instances WHERE sop_instance_uid = %s",
        (str(pydicom.dcmread(ct[0]).SOPInstanceUID),),
    )
    assert versions == 2
    [(patients,)] = gateway.sql("SELECT count(*) FROM patients")
    assert patients == 3  # ct_series gives each seed its own patient ID
    # As one by one in arrival order: the latest non-empty accession and description win.
    [(accession, description)] = gateway.sql(
        "SELECT accession_number, study_description FROM studies WHERE study_instance_uid = %s",
        (study,),
    )
    assert (accession, description) == ("ACC00002", "Generated MR")
    [(done,)] = gateway.sql("SELECT count(*) FROM ingest_jobs WHERE state = 'done'")
    assert done == 21


def test_one_unindexable_instance_is_set_aside_and_its_batch_is_indexed(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = make_gateway()
    files = ct_series(tmp_path / "ct", count=5, size=16)
    bad = pydicom.dcmread(files[2])
    bad.InstanceNumber = "99999999999"  # valid IS, beyond the index's integer column
    bad.save_as(files[2], enforce_file_format=True)
    _received_while_ingest_is_stopped(gateway, files)

    gateway.start_ingest()
    gateway.wait_indexed(5)

    assert "one by one" in gateway.log("ingest")
    states = dict(gateway.sql("SELECT sop_instance_uid, state::text FROM ingest_jobs"))
    assert states.pop(str(bad.SOPInstanceUID)) == "quarantined"
    assert set(states.values()) == {"done"}
    [(reason,)] = gateway.sql("SELECT last_error FROM ingest_jobs WHERE state = 'quarantined'")
    assert reason.startswith("not indexable")
    [(instances, count)] = gateway.sql(
        "SELECT (SELECT count(*) FROM instances), (SELECT instance_count FROM studies)"
    )
    assert (instances, count) == (4, 4)


def test_phi_is_encrypted_with_aes256_and_a_salted_s2k_and_decrypts(
    make_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    gateway = make_gateway()
    files = ct_series(tmp_path / "ct", count=1, size=16, patient_name="Doe^Jane")
    gateway.start_scp()
    gateway.start_ingest()
    assert storescu(gateway.port, *files).returncode == 0
    gateway.wait_indexed(1)
    passphrase = load_phi_key(gateway.root / "secrets" / "phi.key").passphrase

    [(ciphertext, name)] = gateway.sql(
        "SELECT patient_name_enc, pgp_sym_decrypt(patient_name_enc, %s) FROM patients",
        (passphrase,),
    )
    assert name == "Doe^Jane"
    assert b"Doe^Jane" not in bytes(ciphertext)
    # RFC 4880 5.3: the first packet is the Symmetric-Key Encrypted Session Key packet (new
    # format tag 3, one-octet length): version 4, cipher 9 (AES-256), S2K type 1 (salted, not
    # iterated: the passphrase is a random 256-bit key, not a password to slow guessing of).
    header, _length, version, cipher, s2k_type = bytes(ciphertext)[:5]
    assert (header, version, cipher, s2k_type) == (0xC3, 4, 9, 1)
    # Values written with pgcrypto's defaults (before this choice) read back the same way.
    [(legacy,)] = gateway.sql(
        "SELECT pgp_sym_decrypt(pgp_sym_encrypt('Doe^Jane', %s), %s)", (passphrase, passphrase)
    )
    assert legacy == "Doe^Jane"
