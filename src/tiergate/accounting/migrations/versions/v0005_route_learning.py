"""The router's learning tables (issue 14): ``route_samples`` (one row per shadowed request: what the router saw)
and ``route_outcomes`` (one row per tier and source: the judged or application-reported outcome); an index on
``requests.request_id`` for ``POST /v1/feedback``."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "route_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("key_name", sa.String(200), nullable=False),
        sa.Column("route", sa.String(1000), nullable=False),
        sa.Column("served_tier", sa.String(16), nullable=False),
        sa.Column("served_backend", sa.String(200), nullable=True),
        sa.Column("shadow_tier", sa.String(16), nullable=False),
        sa.Column("shadow_backend", sa.String(200), nullable=True),
        sa.Column("route_score", sa.Float, nullable=True),
        sa.Column("ood_distance", sa.Float, nullable=True),
        sa.Column("sample_prob", sa.Float, nullable=False),
        sa.Column("encoder", sa.String(200), nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("features", sa.LargeBinary, nullable=False),
        sa.Column("features_version", sa.String(64), nullable=False),
        sa.Column("rules_score", sa.Float, nullable=False),
        sa.Column("prompt_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("shadow_cost_usd", sa.Float, nullable=False, server_default=sa.text("0")),
        sa.Column("judge_cost_usd", sa.Float, nullable=False, server_default=sa.text("0")),
    )
    op.create_index("ix_route_samples_ts", "route_samples", ["ts"])
    op.create_table(
        "route_outcomes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("key_name", sa.String(200), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("judge", sa.String(200), nullable=False),
        sa.Column("detail", sa.String(200), nullable=False, server_default=sa.text("''")),
    )
    op.create_index("ix_route_outcomes_request_id", "route_outcomes", ["request_id"])
    op.create_index("ix_requests_request_id", "requests", ["request_id"])  # POST /v1/feedback finds its request


def downgrade() -> None:
    op.drop_index("ix_requests_request_id", table_name="requests")
    op.drop_index("ix_route_outcomes_request_id", table_name="route_outcomes")
    op.drop_table("route_outcomes")
    op.drop_index("ix_route_samples_ts", table_name="route_samples")
    op.drop_table("route_samples")
