"""Routing rules: which destinations an instance goes to.

A rule is a list of conditions combined with ``all`` or ``any``, and one or more destinations.
Conditions test what the association said (calling AE, called AE, source IP) or what the data set
says (Modality, SOP Class UID, or any attribute by keyword or tag) with equals / glob / regex /
present / absent. Rules run in ``position`` order; a matching rule with ``stop_processing`` ends
the evaluation; default rules apply only when no other rule matched.

Rules are validated when saved, with errors that name the offending field, so a rule that could
never match (a misspelled keyword, a broken regex) is refused rather than silently ignored.
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydicom.datadict import keyword_dict, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

ASSOCIATION_FIELDS = {"calling_ae", "called_ae", "source_ip"}
SHORTCUT_FIELDS = {"modality": "Modality", "sop_class": "SOPClassUID"}
_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")


class Operator(enum.StrEnum):
    EQUALS = "equals"
    GLOB = "glob"
    REGEX = "regex"
    PRESENT = "present"
    ABSENT = "absent"


def parse_tag(text: str) -> BaseTag | None:
    match = _TAG.match(text.strip())
    return Tag(int(match.group(1), 16), int(match.group(2), 16)) if match else None


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = Field(
        description="calling_ae, called_ae, source_ip, modality, sop_class, "
        "or a DICOM keyword (StudyDescription) or tag (0008,1030)"
    )
    op: Operator
    value: str | None = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        value = value.strip()
        if value in ASSOCIATION_FIELDS or value in SHORTCUT_FIELDS:
            return value
        if value in keyword_dict or parse_tag(value) is not None:
            return value
        raise ValueError(f"'{value}' is neither a routing field nor a DICOM keyword or tag")

    @model_validator(mode="after")
    def _value_fits_operator(self) -> Condition:
        needs_value = self.op in (Operator.EQUALS, Operator.GLOB, Operator.REGEX)
        if needs_value and (self.value is None or self.value == ""):
            raise ValueError(f"operator '{self.op}' needs a value")
        if not needs_value and self.value not in (None, ""):
            raise ValueError(f"operator '{self.op}' takes no value")
        if self.field in ASSOCIATION_FIELDS and self.op in (Operator.PRESENT, Operator.ABSENT):
            raise ValueError(f"'{self.field}' is always present")
        if self.op is Operator.REGEX:
            try:
                re.compile(self.value or "")
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        if self.field == "source_ip" and self.op is Operator.EQUALS:
            try:
                ipaddress.ip_network(self.value or "", strict=False)
            except ValueError as exc:
                raise ValueError(f"source_ip equals needs an address or network: {exc}") from exc
        return self


class RuleSpec(BaseModel):
    """A routing rule as saved (CLI, API): validated before it can reach the database."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    position: int = Field(default=100, ge=0)
    enabled: bool = True
    stop_processing: bool = False
    is_default: bool = False
    match: Literal["all", "any"] = "all"
    conditions: list[Condition] = Field(default_factory=list)
    destinations: list[str] = Field(min_length=1)


@dataclass(frozen=True)
class RoutingContext:
    """What a rule may look at for one instance."""

    calling_ae: str
    called_ae: str
    source_ip: str | None
    dataset: Dataset


def _dataset_value(ds: Dataset, name: str) -> str | None:
    keyword = SHORTCUT_FIELDS.get(name, name)
    tag = parse_tag(keyword)
    if tag is None:
        tag_int = tag_for_keyword(keyword)
        if tag_int is None:
            return None
        tag = Tag(tag_int)
    element = ds.get(tag)
    if element is None or element.value is None or element.value == "":
        return None
    value = element.value
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value).strip()


def _matches(condition: Condition, context: RoutingContext) -> bool:
    if condition.field in ASSOCIATION_FIELDS:
        actual: str | None = getattr(context, condition.field)
    else:
        actual = _dataset_value(context.dataset, condition.field)
    if condition.op is Operator.PRESENT:
        return actual is not None
    if condition.op is Operator.ABSENT:
        return actual is None
    if actual is None:
        return False
    expected = condition.value or ""
    if condition.op is Operator.EQUALS:
        if condition.field == "source_ip":
            try:
                return ipaddress.ip_address(actual) in ipaddress.ip_network(expected, strict=False)
            except ValueError:
                return False
        return actual == expected
    if condition.op is Operator.GLOB:
        return fnmatch.fnmatchcase(actual, expected)
    return re.search(expected, actual) is not None


@dataclass(frozen=True)
class Rule:
    id: int
    name: str
    position: int
    stop_processing: bool
    is_default: bool
    match: str
    conditions: list[Condition]
    destination_ids: list[int]

    def matches(self, context: RoutingContext) -> bool:
        results = (_matches(condition, context) for condition in self.conditions)
        return any(results) if self.match == "any" else all(results)


@dataclass
class RoutingDecision:
    """Destination id -> the id of the rule that chose it (the first one)."""

    destinations: dict[int, int] = field(default_factory=dict)
    matched_rules: list[str] = field(default_factory=list)


def route(rules: list[Rule], context: RoutingContext) -> RoutingDecision:
    decision = RoutingDecision()
    ordered = sorted(rules, key=lambda rule: (rule.position, rule.id))
    for rule in (r for r in ordered if not r.is_default):
        if not rule.matches(context):
            continue
        decision.matched_rules.append(rule.name)
        for destination_id in rule.destination_ids:
            decision.destinations.setdefault(destination_id, rule.id)
        if rule.stop_processing:
            break
    if not decision.matched_rules:
        for rule in (r for r in ordered if r.is_default):
            if rule.matches(context):
                decision.matched_rules.append(rule.name)
                for destination_id in rule.destination_ids:
                    decision.destinations.setdefault(destination_id, rule.id)
                if rule.stop_processing:
                    break
    return decision


def rule_from_row(row: dict[str, Any]) -> Rule:
    return Rule(
        id=row["id"],
        name=row["name"],
        position=row["position"],
        stop_processing=row["stop_processing"],
        is_default=row["is_default"],
        match=row["match"],
        conditions=[Condition.model_validate(c) for c in row["conditions"] or []],
        destination_ids=list(row["destination_ids"] or []),
    )
