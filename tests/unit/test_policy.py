"""AE title and disk policy: the A-ASSOCIATE-RJ reasons of PS3.8 9.3.4."""

from __future__ import annotations

from dicom_gw.config import AllowedCaller, DicomSettings
from dicom_gw.dicom.policy import AssociationPolicy


def policy(usage: float = 10.0, **kwargs: object) -> AssociationPolicy:
    settings = DicomSettings(
        ae_title="GW",
        allowed_callers=[
            AllowedCaller(ae_title="CT1"),
            AllowedCaller(ae_title="MR1", networks=["10.1.0.0/16"]),
        ],
        **kwargs,  # type: ignore[arg-type]
    )
    return AssociationPolicy(settings, lambda: usage, watermark_percent=90)


def test_allowed_caller_is_accepted() -> None:
    assert policy().check("GW", "CT1", "192.0.2.1") is None
    assert policy().check("GW  ", "  CT1 ", "192.0.2.1") is None  # padding is not significant


def test_unknown_caller_is_refused_permanently() -> None:
    rejection = policy().check("GW", "NOPE", "192.0.2.1")
    assert rejection is not None
    assert (rejection.result, rejection.source, rejection.diagnostic) == (1, 1, 3)


def test_caller_outside_its_networks_is_refused() -> None:
    assert policy().check("GW", "MR1", "10.1.2.3") is None
    assert policy().check("GW", "MR1", "10.2.0.1") is not None


def test_wrong_called_title_is_refused() -> None:
    rejection = policy().check("OTHER", "CT1", "192.0.2.1")
    assert rejection is not None
    assert rejection.diagnostic == 7


def test_called_title_check_can_be_disabled() -> None:
    assert policy(require_called_ae_title=False).check("OTHER", "CT1", "192.0.2.1") is None


def test_allow_any_caller_is_explicit() -> None:
    assert policy(allow_any_caller=True).check("GW", "ANYONE", "192.0.2.1") is None


def test_disk_above_watermark_is_a_transient_refusal() -> None:
    rejection = policy(usage=95.0).check("GW", "CT1", "192.0.2.1")
    assert rejection is not None
    assert (rejection.result, rejection.source, rejection.diagnostic) == (2, 3, 1)
