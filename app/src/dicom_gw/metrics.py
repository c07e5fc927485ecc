"""Prometheus metrics shared by every service (exposed by the API's /metrics, multiprocess mode)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECEIVED_INSTANCES = Counter(
    "dicomgw_received_instances_total", "Instances stored and acknowledged by the SCP"
)
RECEIVED_BYTES = Counter("dicomgw_received_bytes_total", "Bytes stored by the SCP")
STORE_FAILURES = Counter(
    "dicomgw_store_failures_total", "C-STORE requests answered with a failure", ["status"]
)
ASSOCIATIONS_REFUSED = Counter(
    "dicomgw_associations_refused_total", "Associations rejected by policy", ["reason"]
)
ASSOCIATIONS_ACTIVE = Gauge(
    "dicomgw_associations_active", "Associations in progress", multiprocess_mode="livesum"
)
STORE_SECONDS = Histogram(
    "dicomgw_store_seconds",
    "Time from full receipt to a durable, recorded file",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
INGESTED = Counter("dicomgw_ingested_total", "Ingest jobs finished", ["outcome"])
INGEST_SECONDS = Histogram("dicomgw_ingest_seconds", "Time to index one instance")
DBPOOL_BATCH_ROWS = Histogram(
    "dicomgw_dbpool_batch_rows",
    "Rows written per DB pool transaction",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
FORWARDED = Counter(
    "dicomgw_forwarded_total", "Delivery attempts by outcome", ["destination", "outcome"]
)
FORWARD_SECONDS = Histogram("dicomgw_forward_seconds", "Time to send one instance", ["destination"])
DEAD_LETTERS = Counter("dicomgw_dead_letters_total", "Deliveries dead-lettered", ["destination"])
CLEANED_FILES = Counter("dicomgw_cleanup_deleted_total", "Stored files deleted", ["mode"])
