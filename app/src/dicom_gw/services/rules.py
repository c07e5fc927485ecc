"""Routing rules: saved validated, loaded for the ingest workers."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dicom_gw.routing import Rule, RuleSpec, rule_from_row
from dicom_gw.services import NotFound, ServiceError

_SELECT = """
SELECT r.id, r.name, r.position, r.enabled, r.stop_processing, r.is_default, r.match,
       r.conditions,
       COALESCE(array_agg(rd.destination_id ORDER BY rd.destination_id)
                FILTER (WHERE rd.destination_id IS NOT NULL), '{}') AS destination_ids,
       COALESCE(array_agg(d.name ORDER BY d.name) FILTER (WHERE d.name IS NOT NULL), '{}')
           AS destination_names
  FROM routing_rules r
  LEFT JOIN rule_destinations rd ON rd.rule_id = r.id
  LEFT JOIN destinations d ON d.id = rd.destination_id
"""


def _destination_ids(conn: psycopg.Connection[Any], names: list[str]) -> list[int]:
    ids = []
    for index, name in enumerate(names):
        row = conn.execute("SELECT id FROM destinations WHERE name = %s", (name,)).fetchone()
        if row is None:
            raise ServiceError(f"destinations.{index}", f"no destination named '{name}'")
        ids.append(int(row[0]))
    return ids


def save_rule(conn: psycopg.Connection[Any], spec: RuleSpec, rule_id: int | None = None) -> int:
    """Create (or replace, given an id) a rule. The spec is already validated by pydantic."""
    destination_ids = _destination_ids(conn, spec.destinations)
    values = spec.model_dump(exclude={"destinations", "conditions"}) | {
        "conditions": json.dumps([c.model_dump(mode="json") for c in spec.conditions])
    }
    try:
        with conn.transaction():
            if rule_id is None:
                row = conn.execute(
                    "INSERT INTO routing_rules (name, position, enabled, stop_processing,"
                    " is_default, match, conditions) VALUES (%(name)s, %(position)s, %(enabled)s,"
                    " %(stop_processing)s, %(is_default)s, %(match)s, %(conditions)s) RETURNING id",
                    values,
                ).fetchone()
            else:
                row = conn.execute(
                    "UPDATE routing_rules SET name = %(name)s, position = %(position)s,"
                    " enabled = %(enabled)s, stop_processing = %(stop_processing)s,"
                    " is_default = %(is_default)s, match = %(match)s, conditions = %(conditions)s,"
                    " updated_at = now() WHERE id = %(id)s RETURNING id",
                    values | {"id": rule_id},
                ).fetchone()
                if row is None:
                    raise NotFound("rule", f"no rule {rule_id}")
                conn.execute("DELETE FROM rule_destinations WHERE rule_id = %s", (rule_id,))
            assert row is not None
            new_id = int(row[0])
            for destination_id in destination_ids:
                conn.execute(
                    "INSERT INTO rule_destinations (rule_id, destination_id) VALUES (%s, %s)",
                    (new_id, destination_id),
                )
    except psycopg.errors.UniqueViolation as exc:
        raise ServiceError("name", f"a rule named '{spec.name}' exists") from exc
    return new_id


def list_rules(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_SELECT + " GROUP BY r.id ORDER BY r.position, r.id").fetchall()


def load_active_rules(conn: psycopg.Connection[Any]) -> list[Rule]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            _SELECT + " WHERE r.enabled GROUP BY r.id ORDER BY r.position, r.id"
        ).fetchall()
    return [rule_from_row(row) for row in rows]


def delete_rule(conn: psycopg.Connection[Any], name: str) -> None:
    with conn.transaction():
        row = conn.execute("DELETE FROM routing_rules WHERE name = %s RETURNING id", (name,))
        if row.fetchone() is None:
            raise NotFound("rule", f"no rule named '{name}'")


def set_rule_enabled(conn: psycopg.Connection[Any], name: str, enabled: bool) -> None:
    with conn.transaction():
        row = conn.execute(
            "UPDATE routing_rules SET enabled = %s, updated_at = now()"
            " WHERE name = %s RETURNING id",
            (enabled, name),
        )
        if row.fetchone() is None:
            raise NotFound("rule", f"no rule named '{name}'")
