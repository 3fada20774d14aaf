"""Open-weight costs: ``marginal_usd`` (what a request added to the bill) and ``utilisation`` (measured).

Rows written before this revision get the marginal cost they would have had: their whole cost on the
closed tier (every token is billed), nothing elsewhere; their utilisation stays unknown (NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("requests", sa.Column("marginal_usd", sa.Float, nullable=False, server_default=sa.text("0")))
    op.add_column("requests", sa.Column("utilisation", sa.Float, nullable=True))
    op.execute("UPDATE requests SET marginal_usd = cost_usd WHERE tier = 'closed'")


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("utilisation")
        batch.drop_column("marginal_usd")
