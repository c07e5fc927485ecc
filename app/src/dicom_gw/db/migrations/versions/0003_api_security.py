"""api security

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 12:58:36.571108
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# The audit log is append-only and hash-chained, enforced in the database so that no code path
# (and no one with the application's credentials) can rewrite history unnoticed:
# - a BEFORE INSERT trigger takes a transaction-scoped advisory lock (one writer at a time, so the
#   chain never forks), links the entry to the previous entry's hash and computes its own hash;
# - UPDATE, DELETE and TRUNCATE are refused;
# - audit_entry_hash() is the single definition of what is hashed, used by the trigger and by the
#   verification query alike. Timestamps are rendered in UTC so the hash does not depend on the
#   session's TimeZone; jsonb's text form is canonical.
AUDIT_SQL = """
CREATE FUNCTION audit_entry_hash(prev text, e audit_log) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(digest(concat_ws('|', coalesce(prev, ''), e.id::text,
        to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
        coalesce(e.actor, ''), array_to_string(e.roles, ','), coalesce(host(e.source_ip), ''),
        e.action, coalesce(e.target, ''), e.outcome, e.detail::text), 'sha256'), 'hex')
$$;

CREATE FUNCTION audit_log_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('dicomgw.audit_log'));
    SELECT hash INTO NEW.prev_hash FROM audit_log ORDER BY id DESC LIMIT 1;
    NEW.created_at := now();
    NEW.hash := audit_entry_hash(NEW.prev_hash, NEW);
    RETURN NEW;
END $$;

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END $$;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_chain();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

ALTER TABLE audit_log ALTER COLUMN hash SET DEFAULT '';
ALTER TABLE audit_log ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', coalesce(actor, '') || ' ' || action || ' ' || coalesce(target, '')
                || ' ' || outcome || ' ' || detail::text)) STORED;
CREATE INDEX ix_audit_log_search ON audit_log USING gin (search);
CREATE INDEX ix_audit_log_created_at ON audit_log (created_at);
"""
revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "runtime_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_runtime_settings")),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("family", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "issued_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_refresh_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_tokens_token_hash")),
    )
    op.create_index(op.f("ix_refresh_tokens_family"), "refresh_tokens", ["family"], unique=False)
    op.create_index(op.f("ix_refresh_tokens_user_id"), "refresh_tokens", ["user_id"], unique=False)
    op.create_index(
        "ix_deliveries_sent_at",
        "deliveries",
        ["sent_at"],
        unique=False,
        postgresql_where=sa.text("sent_at IS NOT NULL"),
    )
    op.add_column(
        "users",
        sa.Column(
            "password_changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    op.execute(AUDIT_SQL)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_log_chain ON audit_log")
    op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
    op.execute("DROP INDEX IF EXISTS ix_audit_log_search")
    op.execute("DROP INDEX IF EXISTS ix_audit_log_created_at")
    op.execute("ALTER TABLE audit_log DROP COLUMN IF EXISTS search")
    op.execute("DROP FUNCTION IF EXISTS audit_log_chain()")
    op.execute("DROP FUNCTION IF EXISTS audit_log_refuse_change()")
    op.execute("DROP FUNCTION IF EXISTS audit_entry_hash(text, audit_log)")
    op.drop_column("users", "password_changed_at")
    op.drop_index(
        "ix_deliveries_sent_at",
        table_name="deliveries",
        postgresql_where=sa.text("sent_at IS NOT NULL"),
    )
    op.drop_index(op.f("ix_refresh_tokens_user_id"), table_name="refresh_tokens")
    op.drop_index(op.f("ix_refresh_tokens_family"), table_name="refresh_tokens")
    op.drop_table("refresh_tokens")
    op.drop_table("runtime_settings")
