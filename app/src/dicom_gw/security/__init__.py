"""Security primitives: PHI encryption keys (passwords, tokens and RBAC join with the API)."""
