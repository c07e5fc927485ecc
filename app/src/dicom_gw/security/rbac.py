"""Role-based access control: the one table of which role may call which endpoint.

Every route of the API must appear here; the authorization dependency refuses a route it does
not find (fail closed), and the authorization-matrix test fails for a route missing from the
table. ``docs/security.md`` prints this table.
"""

from __future__ import annotations

ADMIN, OPERATOR, VIEWER, AUDITOR = "admin", "operator", "viewer", "auditor"
ROLES = (ADMIN, OPERATOR, VIEWER, AUDITOR)

PUBLIC: frozenset[str] = frozenset()
ANY_USER = frozenset(ROLES)
READERS = frozenset({ADMIN, OPERATOR, VIEWER})  # clinical read access
OPERATORS = frozenset({ADMIN, OPERATOR})
ADMINS = frozenset({ADMIN})
AUDITORS = frozenset({ADMIN, AUDITOR})

# (method, path template) -> roles allowed. PUBLIC means no token needed.
PERMISSIONS: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/api/v1/auth/login"): PUBLIC,
    ("POST", "/api/v1/auth/refresh"): PUBLIC,
    ("POST", "/api/v1/auth/logout"): PUBLIC,
    ("GET", "/api/v1/auth/me"): ANY_USER,
    ("POST", "/api/v1/auth/password"): ANY_USER,
    ("GET", "/api/v1/users"): ADMINS,
    ("POST", "/api/v1/users"): ADMINS,
    ("PATCH", "/api/v1/users/{user_id}"): ADMINS,
    ("POST", "/api/v1/users/{user_id}/password"): ADMINS,
    ("GET", "/api/v1/studies"): READERS,
    ("GET", "/api/v1/studies/{study_id}"): READERS,
    ("POST", "/api/v1/studies/{study_id}/replay"): OPERATORS,
    ("GET", "/api/v1/instances/{instance_id}/file"): OPERATORS,
    ("GET", "/api/v1/destinations"): READERS,
    ("POST", "/api/v1/destinations"): ADMINS,
    ("GET", "/api/v1/destinations/{destination_id}"): READERS,
    ("PATCH", "/api/v1/destinations/{destination_id}"): ADMINS,
    ("DELETE", "/api/v1/destinations/{destination_id}"): ADMINS,
    ("POST", "/api/v1/destinations/{destination_id}/echo"): OPERATORS,
    ("GET", "/api/v1/rules"): READERS,
    ("POST", "/api/v1/rules"): ADMINS,
    ("POST", "/api/v1/rules/reorder"): ADMINS,
    ("POST", "/api/v1/rules/test"): ADMINS,
    ("GET", "/api/v1/rules/{rule_id}"): READERS,
    ("PUT", "/api/v1/rules/{rule_id}"): ADMINS,
    ("DELETE", "/api/v1/rules/{rule_id}"): ADMINS,
    ("GET", "/api/v1/queue/deliveries"): READERS,
    ("GET", "/api/v1/queue/counts"): READERS,
    ("GET", "/api/v1/queue/deliveries/{delivery_id}/history"): READERS,
    ("POST", "/api/v1/queue/retry"): OPERATORS,
    ("POST", "/api/v1/queue/cancel"): OPERATORS,
    ("GET", "/api/v1/events"): READERS,
    ("GET", "/api/v1/audit"): AUDITORS,
    ("GET", "/api/v1/audit/export"): AUDITORS,
    ("GET", "/api/v1/audit/verify"): AUDITORS,
    ("GET", "/api/v1/metrics/summary"): READERS,
    ("GET", "/api/v1/health"): ANY_USER,
    ("GET", "/api/v1/settings"): ADMINS,
    ("PATCH", "/api/v1/settings"): ADMINS,
    # Infrastructure probes: nginx allows /metrics only from the monitoring network.
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
}


def allowed(method: str, path: str, roles: list[str]) -> bool | None:
    """True/False for a known route; None for a route missing from the table (refuse it)."""
    permitted = PERMISSIONS.get((method.upper(), path))
    if permitted is None:
        return None
    return permitted is PUBLIC or bool(permitted.intersection(roles))


def markdown_table() -> str:
    """The table as Markdown, for docs/security.md (``python -m dicom_gw.security.rbac``)."""
    lines = [
        "| Method | Path | " + " | ".join(ROLES) + " |",
        "|---|---|" + "---|" * len(ROLES),
    ]
    for (method, path), permitted in sorted(PERMISSIONS.items(), key=lambda i: (i[0][1], i[0][0])):
        if permitted is PUBLIC:
            cells = ["public"] * len(ROLES)
        else:
            cells = ["yes" if role in permitted else "-" for role in ROLES]
        lines.append(f"| {method} | `{path}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
