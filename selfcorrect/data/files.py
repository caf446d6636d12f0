"""Raw rows from a data file: JSON Lines, JSON, or Parquet, on a local path or gs://.

Every row comes back as (row number, dict); every problem raises RecordError naming the
file, the row (1-based; for a .json array, the element; none for the whole file) and the
field ('*' for the row). Text is UTF-8; a leading byte-order mark and CRLF line ends are
accepted; compressed or UTF-16 files are named as such.

>>> import tempfile, os
>>> d = tempfile.mkdtemp(); p = os.path.join(d, "x.jsonl")
>>> _ = open(p, "w").write('{"a": 1}\\n\\n{"a": 2}\\n')
>>> read_rows(p)
[(1, {'a': 1}), (3, {'a': 2})]
"""
from __future__ import annotations

from selfcorrect import storage
from selfcorrect.records import (
    PARQUET_MAGIC,
    RecordError,
    data_columns,
    decode,
    loads,
    parse_jsonl,
    read_parquet_table,
)


def read_rows(uri: str, columns: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """The file's rows; `columns` must be present in a Parquet file (named if missing)."""
    uri = str(uri)
    data = storage.read_bytes(uri)     # FileNotFoundError names a missing file or object
    low = uri.lower()
    if not low.endswith((".parquet", ".json", ".jsonl")):
        raise RecordError(uri, None, None, "unknown format: name the file .jsonl, .json or .parquet")
    if not data.strip():
        raise RecordError(uri, None, None, "no records: the file is empty")
    if low.endswith(".parquet") or data.startswith(PARQUET_MAGIC):
        rows = _parquet(uri, data, columns)
    elif low.endswith(".json"):
        rows = _json(uri, decode(uri, data))
    else:
        rows = [(row, _object(uri, row, value)) for row, value in parse_jsonl(uri, decode(uri, data))]
    if not rows:
        raise RecordError(uri, None, None, "no records: the file holds no rows")
    return rows


def _json(uri: str, text: str) -> list[tuple[int, dict]]:
    """A JSON array of objects, or one object (MATH ships one problem per .json file)."""
    value = loads(uri, None, text)
    items = value if isinstance(value, list) else [value]
    return [(row, _object(uri, row, v)) for row, v in enumerate(items, start=1)]


def _object(uri: str, row: int, value) -> dict:
    if not isinstance(value, dict):
        kind = "null" if value is None else type(value).__name__
        raise RecordError(uri, row, "*", f"expected a JSON object, got {kind}")
    return value


def _parquet(uri: str, data: bytes, columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    table = read_parquet_table(uri, data)
    names = data_columns(uri, table, 1 if table.num_rows else None)
    for name in columns:
        if name not in names:
            raise RecordError(uri, 1 if table.num_rows else None, name,
                              f"missing column (all rows); the file has {', '.join(names) or 'no columns'}")
    # a null is a missing value: published datasets leave optional fields null
    return [(row, {k: v for k, v in d.items() if v is not None})
            for row, d in enumerate(table.select(names).to_pylist(), start=1)]
