"""PHI encryption settings shared by the app and the API benchmark's generated data."""

from dicom_gw.security.phi import PGP_OPTIONS
from tests.perf import api_bench


def test_the_api_benchmark_encrypts_as_the_ingest_worker_does() -> None:
    # The benchmark's venv cannot import the app, so it keeps a copy; a drift would make its
    # search figures measure a different decryption cost than a real gateway's.
    assert api_bench.PGP_OPTIONS == PGP_OPTIONS
