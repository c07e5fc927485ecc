"""The REST API (FastAPI): thin routers over the service layer, one RBAC table, audit on every
mutation and PHI read."""
