"""forwarding

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 12:40:13.371385
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Every state change of a delivery is kept with its time and reason. A trigger writes it, so no
# code path can change a state without leaving the record. Operators' actions name themselves
# through the transaction-local setting dicomgw.reason; failures fall back to last_error.
# Claims are not recorded: they are bookkeeping, and the outcome that follows always is.
# The forward workers LISTEN on "deliveries"; the payload is the destination to wake.
DELIVERY_TRIGGERS = """
CREATE FUNCTION record_delivery_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    why text := NULLIF(current_setting('dicomgw.reason', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO delivery_events (delivery_id, from_state, to_state, attempts, reason)
        VALUES (NEW.id, NULL, NEW.state::text, NEW.attempts, COALESCE(why, 'routed'));
    ELSIF NEW.state IS DISTINCT FROM OLD.state AND NEW.state <> 'claimed' THEN
        INSERT INTO delivery_events (delivery_id, from_state, to_state, attempts, reason)
        VALUES (NEW.id, OLD.state::text, NEW.state::text, NEW.attempts,
                COALESCE(why, CASE WHEN NEW.state IN ('retry', 'dead') THEN NEW.last_error END));
    END IF;
    IF NEW.state IN ('pending', 'retry') THEN
        PERFORM pg_notify('deliveries', NEW.destination_id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_record_event AFTER INSERT OR UPDATE OF state ON deliveries
    FOR EACH ROW EXECUTE FUNCTION record_delivery_event();
"""

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_events")),
    )
    op.create_index(
        op.f("ix_delivery_events_delivery_id"), "delivery_events", ["delivery_id"], unique=False
    )
    op.create_table(
        "operation_metrics",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("destination_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operation_metrics")),
    )
    op.create_index(
        op.f("ix_operation_metrics_recorded_at"), "operation_metrics", ["recorded_at"], unique=False
    )
    op.add_column("deliveries", sa.Column("study_id", sa.BigInteger(), nullable=True))
    op.add_column("deliveries", sa.Column("rule_id", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_deliveries_study_id"), "deliveries", ["study_id"], unique=False)
    op.create_index(
        "uq_deliveries_open_instance_destination",
        "deliveries",
        ["instance_id", "destination_id"],
        unique=True,
        postgresql_where=sa.text("state NOT IN ('sent', 'dead', 'cancelled')"),
    )
    op.create_foreign_key(
        op.f("fk_deliveries_study_id_studies"), "deliveries", "studies", ["study_id"], ["id"]
    )
    op.create_index(
        "ix_instances_received_at_live",
        "instances",
        ["received_at"],
        unique=False,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "spool_segments",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "loaded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_spool_segments")),
    )
    op.execute(DELIVERY_TRIGGERS)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS deliveries_record_event ON deliveries")
    op.execute("DROP FUNCTION IF EXISTS record_delivery_event()")
    op.drop_table("spool_segments")
    op.drop_index(
        "ix_instances_received_at_live",
        table_name="instances",
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.drop_constraint(op.f("fk_deliveries_study_id_studies"), "deliveries", type_="foreignkey")
    op.drop_index(
        "uq_deliveries_open_instance_destination",
        table_name="deliveries",
        postgresql_where=sa.text("state NOT IN ('sent', 'dead', 'cancelled')"),
    )
    op.drop_index(op.f("ix_deliveries_study_id"), table_name="deliveries")
    op.drop_column("deliveries", "rule_id")
    op.drop_column("deliveries", "study_id")
    op.drop_index(op.f("ix_operation_metrics_recorded_at"), table_name="operation_metrics")
    op.drop_table("operation_metrics")
    op.drop_index(op.f("ix_delivery_events_delivery_id"), table_name="delivery_events")
    op.drop_table("delivery_events")
