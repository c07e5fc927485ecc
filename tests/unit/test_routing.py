"""Routing rule validation and evaluation."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset

from dicom_gw.queue import backoff_seconds
from dicom_gw.routing import Condition, RoutingContext, Rule, RuleSpec, route


def context(**attrs: str) -> RoutingContext:
    ds = Dataset()
    ds.Modality = attrs.pop("Modality", "CT")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.StudyDescription = attrs.pop("StudyDescription", "CT HEAD")
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return RoutingContext("CT1", "DICOM_GW", "10.1.2.3", ds)


def rule(rule_id: int, conditions: list[dict[str, str]], to: list[int], **kw: object) -> Rule:
    return Rule(
        id=rule_id,
        name=f"r{rule_id}",
        position=int(kw.get("position", rule_id)),  # type: ignore[call-overload]
        stop_processing=bool(kw.get("stop", False)),
        is_default=bool(kw.get("default", False)),
        match=str(kw.get("match", "all")),
        conditions=[Condition.model_validate(c) for c in conditions],
        destination_ids=to,
    )


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"field": "calling_ae", "op": "equals", "value": "CT1"}, True),
        ({"field": "called_ae", "op": "equals", "value": "OTHER"}, False),
        ({"field": "source_ip", "op": "equals", "value": "10.1.0.0/16"}, True),
        ({"field": "source_ip", "op": "equals", "value": "10.2.0.0/16"}, False),
        ({"field": "modality", "op": "equals", "value": "CT"}, True),
        ({"field": "sop_class", "op": "glob", "value": "1.2.840.10008.5.1.4.1.1.*"}, True),
        ({"field": "StudyDescription", "op": "regex", "value": "HEAD$"}, True),
        (
            {"field": "(0008,1030)", "op": "glob", "value": "*head*"},
            False,
        ),  # glob is case-sensitive
        ({"field": "0008,1030", "op": "present"}, True),
        ({"field": "AccessionNumber", "op": "absent"}, True),
        ({"field": "AccessionNumber", "op": "present"}, False),
        ({"field": "AccessionNumber", "op": "equals", "value": "x"}, False),
    ],
)
def test_conditions(condition: dict[str, str], expected: bool) -> None:
    assert rule(1, [condition], [1]).matches(context()) is expected


def test_all_any_stop_and_default() -> None:
    ct = {"field": "modality", "op": "equals", "value": "CT"}
    mr = {"field": "modality", "op": "equals", "value": "MR"}
    rules = [
        rule(1, [ct, mr], [1], match="any"),
        rule(2, [ct, mr], [2], match="all"),
        rule(3, [ct], [3], stop=True),
        rule(4, [], [4]),  # never reached: rule 3 stops processing
        rule(5, [], [5], default=True),
    ]
    decision = route(rules, context())
    assert decision.destinations == {1: 1, 3: 3}
    assert route(rules, context(Modality="US")).destinations == {4: 4}
    assert route([rules[0], rules[4]], context(Modality="US")).destinations == {5: 5}


@pytest.mark.parametrize(
    ("conditions", "field"),
    [
        ([{"field": "PatientNme", "op": "equals", "value": "x"}], "conditions.0.field"),
        ([{"field": "modality", "op": "regex", "value": "(["}], "conditions.0"),
        ([{"field": "modality", "op": "glob"}], "conditions.0"),
        ([{"field": "modality", "op": "absent", "value": "CT"}], "conditions.0"),
        ([{"field": "modality", "op": "like", "value": "CT"}], "conditions.0.op"),
        ([{"field": "source_ip", "op": "equals", "value": "not-ip"}], "conditions.0"),
    ],
)
def test_invalid_rules_name_the_field(conditions: list[dict[str, str]], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RuleSpec.model_validate({"name": "x", "destinations": ["d"], "conditions": conditions})
    locations = {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}
    assert any(loc.startswith(field) for loc in locations), locations


def test_a_rule_needs_a_destination() -> None:
    with pytest.raises(ValidationError) as caught:
        RuleSpec.model_validate({"name": "x", "destinations": []})
    assert caught.value.errors()[0]["loc"] == ("destinations",)


def test_backoff_is_full_jitter_under_a_growing_cap() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
        samples = [backoff_seconds(attempt, 2.0, 60.0, rng) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # spread over the whole range, not clustered
