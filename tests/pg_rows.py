"""The one row a query must return. psycopg types ``fetchone`` as possibly ``None`` (no
row); in these tests that is a failure, reported as such, not a case to handle."""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow


def one(cursor: psycopg.Cursor[TupleRow]) -> TupleRow:
    row = cursor.fetchone()
    assert row is not None, "the query returned no row"
    return row
