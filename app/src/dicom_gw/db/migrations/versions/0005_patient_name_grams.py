"""patient name trigram index

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The hashes need the PHI key, which the database never sees, so the migration only adds the
# column and its indexes; `dicom-gw migrate` fills existing rows afterwards with the key
# (services/patients.py), and a search treats a row still NULL as "decrypt to compare".


def upgrade() -> None:
    op.add_column(
        "patients", sa.Column("name_grams", postgresql.ARRAY(sa.Integer()), nullable=True)
    )
    op.create_index("ix_patients_name_grams", "patients", ["name_grams"], postgresql_using="gin")
    op.create_index(
        "ix_patients_name_grams_missing",
        "patients",
        ["id"],
        postgresql_where=sa.text("name_grams IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_patients_name_grams_missing", table_name="patients")
    op.drop_index("ix_patients_name_grams", table_name="patients")
    op.drop_column("patients", "name_grams")
