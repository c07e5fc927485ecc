"""schemathesis over the whole OpenAPI schema with an admin token: no 5xx, ever.

Driven operation by operation with hypothesis directly (schemathesis' pytest plugin does not
load under this pytest), against the real app and database.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.api_support import Api, api

__all__ = ["api"]

SKIP = {"/api/v1/events"}  # an endless event stream, covered by its own test


def test_no_server_errors(api: Api) -> None:
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", api.client.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIP:
            continue
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def exercise(case: schemathesis.Case) -> None:
            response = case.call(headers=api.headers("admin"))
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}")

        exercise()
    assert operations > 30
    assert not failures, failures[:20]
