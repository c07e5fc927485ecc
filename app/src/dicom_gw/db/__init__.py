"""Database access: models, engine, migrations, and a private cluster for dev and tests."""
