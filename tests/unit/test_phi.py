"""PHI encryption settings shared with the API benchmark, and the name search's keyed trigrams."""

from hypothesis import given
from hypothesis import strategies as st

from dicom_gw.security.phi import PGP_OPTIONS, PhiKey
from tests.perf import api_bench


def test_the_api_benchmark_encrypts_as_the_ingest_worker_does() -> None:
    # The benchmark's venv cannot import the app, so it keeps a copy; a drift would make its
    # search figures measure a different decryption cost than a real gateway's.
    assert api_bench.PGP_OPTIONS == PGP_OPTIONS


def _key(byte: int) -> PhiKey:
    return PhiKey(bytes([byte]) * 32)


def test_name_grams_are_keyed_case_blind_and_need_three_characters() -> None:
    key = _key(1)
    assert key.name_grams("Doe^Jane") == key.name_grams("DOE^JANE")
    assert key.name_grams("Doe^Jane") != _key(2).name_grams("Doe^Jane")
    assert len(key.name_grams("Doe^Jane")) == len("Doe^Jane") - 2
    assert key.name_grams("Do") == [] and key.name_grams("") == [] and key.name_grams(None) == []
    assert all(-(2**31) <= gram < 2**31 for gram in key.name_grams("Müller^Zoë=ミュラー"))
    # Unrelated to the Patient ID blind index computed with the same key.
    assert key.blind_index("Doe")[:4] not in {
        g.to_bytes(4, "big", signed=True) for g in key.name_grams("Doe")
    }


@given(name=st.text(min_size=0, max_size=40), start=st.integers(0, 40), size=st.integers(3, 40))
def test_every_substring_of_a_name_has_its_grams_among_the_names(
    name: str, start: int, size: int
) -> None:
    # The search's promise: a stored name never misses a term it contains (no false negative).
    key = _key(7)
    term = name[start : start + size]
    assert set(key.name_grams(term)) <= set(key.name_grams(name))
