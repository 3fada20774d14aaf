"""Batch work: ``batch`` names the ``tiergate batch`` run a row belongs to (NULL: live traffic).

Rows written before this revision are live traffic: their ``batch`` stays NULL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("requests", sa.Column("batch", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("batch")
