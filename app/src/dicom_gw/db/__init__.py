"""Database access: models, engine and connections, migrations, and a private cluster for dev/test."""
