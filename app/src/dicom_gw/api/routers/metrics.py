"""The dashboard's numbers, and Prometheus metrics for every process (multiprocess mode)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from dicom_gw.api.deps import Db, State
from dicom_gw.dicom.storage import Storage

router = APIRouter(tags=["metrics"])

_PER_MINUTE = """
SELECT to_char(m, 'YYYY-MM-DD"T"HH24:MI:00"Z"') AS minute, coalesce(n, 0) AS count
  FROM generate_series(date_trunc('minute', now() AT TIME ZONE 'UTC') - interval '59 minutes',
                       date_trunc('minute', now() AT TIME ZONE 'UTC'), interval '1 minute') AS m
  LEFT JOIN (SELECT date_trunc('minute', {column} AT TIME ZONE 'UTC') AS t, count(*) AS n
               FROM {table} WHERE {column} > now() - interval '1 hour' {extra}
              GROUP BY 1) c ON c.t = m
 ORDER BY m
"""


@router.get("/api/v1/metrics/summary", response_model=dict[str, Any])
def summary(conn: Db, state: State) -> dict[str, Any]:
    received = conn.execute(
        _PER_MINUTE.format(column="received_at", table="instances", extra="AND deleted_at IS NULL")
    ).fetchall()
    forwarded = conn.execute(
        _PER_MINUTE.format(column="sent_at", table="deliveries", extra="AND sent_at IS NOT NULL")
    ).fetchall()
    queue = dict(
        conn.execute("SELECT state::text, count(*) FROM deliveries GROUP BY state").fetchall()
    )
    destinations = conn.execute(
        """SELECT t.id, t.name, t.enabled,
                  (SELECT max(sent_at) FROM deliveries d WHERE d.destination_id = t.id),
                  (SELECT max(updated_at) FROM deliveries d WHERE d.destination_id = t.id
                      AND d.state IN ('retry', 'dead')),
                  (SELECT last_error FROM deliveries d WHERE d.destination_id = t.id
                      AND d.state IN ('retry', 'dead') ORDER BY updated_at DESC LIMIT 1),
                  (SELECT count(*) FROM deliveries d WHERE d.destination_id = t.id
                      AND d.state = 'dead'),
                  (SELECT count(*) FROM deliveries d WHERE d.destination_id = t.id
                      AND d.state IN ('pending', 'retry', 'claimed', 'held'))
             FROM destinations t ORDER BY t.name"""
    ).fetchall()
    keys = (
        "id",
        "name",
        "enabled",
        "last_success_at",
        "last_error_at",
        "last_error",
        "dead",
        "pending",
    )
    storage = Storage(state.settings.storage.root)
    return {
        "received_per_minute": [{"minute": m, "count": n} for m, n in received],
        "forwarded_per_minute": [{"minute": m, "count": n} for m, n in forwarded],
        "queue": {
            s: queue.get(s, 0)
            for s in ("held", "pending", "claimed", "retry", "sent", "dead", "cancelled")
        },
        "destinations": [dict(zip(keys, row, strict=True)) for row in destinations],
        "disk": {
            "used_percent": round(storage.usage_percent(), 2),
            "watermark_percent": state.settings.storage.disk_watermark_percent,
        },
    }


class _StateCollector:
    """Gauges read from the database and the disk at scrape time: queue depth per destination
    and state, ingest backlog, disk usage. Counters and histograms come from the processes."""

    def __init__(self, conn: Any, storage: Storage, watermark: float) -> None:
        self.conn, self.storage, self.watermark = conn, storage, watermark

    def collect(self) -> Any:
        deliveries = GaugeMetricFamily(
            "dicomgw_deliveries",
            "Deliveries by destination and state",
            labels=["destination", "state"],
        )
        for name, state, count in self.conn.execute(
            "SELECT t.name, d.state::text, count(*) FROM deliveries d"
            " JOIN destinations t ON t.id = d.destination_id GROUP BY t.name, d.state"
        ).fetchall():
            deliveries.add_metric([name, state], count)
        yield deliveries
        ingest = GaugeMetricFamily("dicomgw_ingest_jobs", "Ingest jobs by state", labels=["state"])
        for state, count in self.conn.execute(
            "SELECT state::text, count(*) FROM ingest_jobs WHERE state IN ('pending', 'claimed',"
            " 'quarantined') GROUP BY state"
        ).fetchall():
            ingest.add_metric([state], count)
        yield ingest
        yield GaugeMetricFamily(
            "dicomgw_disk_used_percent",
            "Storage file system usage",
            value=self.storage.usage_percent(),
        )
        yield GaugeMetricFamily(
            "dicomgw_disk_watermark_percent", "Refusal watermark", value=self.watermark
        )


@router.get("/metrics", include_in_schema=False)
def prometheus(conn: Db, state: State) -> Response:
    """Metrics of every gateway process (prometheus-client multiprocess mode) and the queues."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    storage = Storage(state.settings.storage.root)
    extra = CollectorRegistry()
    extra.register(_StateCollector(conn, storage, state.settings.storage.disk_watermark_percent))
    data = generate_latest(registry) + generate_latest(extra)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
