"""Alembic migrations of the ledger, run programmatically at start-up by :func:`tiergate.accounting.database.migrate`.

To add one, copy ``versions/v0001_requests.py`` to the next number, set ``revision`` and ``down_revision``,
and write ``upgrade`` with ``alembic.op``; no ``alembic.ini`` is involved.
"""
