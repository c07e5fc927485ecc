"""study search index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 03:05:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The studies list's default order (newest first, id as tie-break) read straight from an index,
# so the first page stops after its 25 rows instead of sorting every study. It replaces the
# single-column index, which serves the same range filters: studies.last_received_at changes with
# every received instance, so a second index on it would cost each ingest an extra index write.


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_studies_last_received_at_id"
        " ON studies (last_received_at DESC NULLS LAST, id DESC)"
    )
    op.drop_index("ix_studies_last_received_at", table_name="studies")


def downgrade() -> None:
    op.create_index("ix_studies_last_received_at", "studies", ["last_received_at"], unique=False)
    op.drop_index("ix_studies_last_received_at_id", table_name="studies")
