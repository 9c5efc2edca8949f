"""File formats of the History API's ``Export``: pages of site-series rows -> the bytes of a
CSV or Parquet file, produced incrementally so a long run never sits in memory whole.

Rows are ``(time_s, step, value, ...)`` as ``queries.export_pages`` yields them (None where
there is no value). Floats are written so that they read back exactly: CSV with
``repr`` (shortest round-trip form), Parquet as float64.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence

Row = tuple  # (time_s, step, value, ...)
MAX_CHUNK_BYTES = 1 << 20
MIN_CHUNK_BYTES = 16 << 10  # smaller requests are raised to it


def columns(metrics: Sequence[str]) -> list[str]:
    return ["time_s", "step", *metrics]


async def csv_bytes(
    pages: AsyncIterator[list[Row]], metrics: Sequence[str]
) -> AsyncIterator[bytes]:
    """A header line, then one CSV block per page; an empty field where there is none."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns(metrics))
    yield buffer.getvalue().encode()
    async for page in pages:
        buffer.seek(0)
        buffer.truncate()
        for time_s, step, *values in page:
            writer.writerow([repr(time_s), step, *("" if v is None else repr(v) for v in values)])
        yield buffer.getvalue().encode()


class _Sink(io.RawIOBase):
    """A write-only file that keeps only what was written since the last ``drain`` while
    ``tell`` counts every byte (the Parquet footer records absolute offsets)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


async def parquet_bytes(
    pages: AsyncIterator[list[Row]], metrics: Sequence[str]
) -> AsyncIterator[bytes]:
    """A Parquet file, one row group per page, handed out as each row group is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("time_s", pa.float64()), ("step", pa.int64())] + [(m, pa.float64()) for m in metrics]
    )
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        async for page in pages:
            arrays = [
                pa.array([_float(row[i]) for row in page], type=field.type)
                if i != 1
                else pa.array([row[1] for row in page], type=pa.int64())
                for i, field in enumerate(schema)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            if data := sink.drain():
                yield data
    finally:
        writer.close()  # the footer
    yield sink.drain()


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def split(blobs: Iterable[bytes], size: int) -> Iterable[bytes]:
    """Each blob in pieces of at most ``size`` bytes (empty blobs dropped)."""
    for blob in blobs:
        for i in range(0, len(blob), size):
            yield blob[i : i + size]
