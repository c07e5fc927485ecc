"""Background workers: ingest (now), forward, dbpool and cleanup (routing issue)."""
