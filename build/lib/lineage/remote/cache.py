"""The on-disk cache of answered queries: an interrupted audit resumes without paying for
what was answered, and a rerun of the same audit is free.

One SQLite file (stdlib `sqlite3`; nothing is pickled). A row's key is (endpoint, model
and its versions, output, sha256 of the input row's float32 bytes); its value the answer's
raw bytes: the logits as little-endian float32, or a label as int64. Each reply's answers
go in with one transaction, so a process killed mid-write leaves the reply's answers all
there or all absent (SQLite's journal; WAL mode: concurrent audits share the file).
Values read back are checked like replies (`RemoteModel`), since the file is only data.
The API key is never part of a key or a value.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import LineageError

FILE = "queries.sqlite"
FORMAT = "lineage-query-cache/1"
CHUNK = 500  # keys per SELECT (SQLite's parameter limit is 999 on old builds)


class QueryCache:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / FILE
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # one caller at a time (RemoteModel), but not always the thread that opened it
            self.db = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed process loses nothing
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS answers (endpoint TEXT NOT NULL, model TEXT NOT "
                "NULL, output TEXT NOT NULL, row BLOB NOT NULL, value BLOB NOT NULL, "
                "PRIMARY KEY (endpoint, model, output, row)) WITHOUT ROWID"
            )
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
            (fmt,) = self.db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        except (sqlite3.Error, OSError) as e:
            raise LineageError(
                f"{self.path}: not a usable query cache ({e}); move it away or pass another --cache"
            ) from None
        if fmt != FORMAT:
            raise LineageError(f"{self.path}: cache format {fmt!r}, expected {FORMAT!r}")

    def get(self, scope: Sequence[str], rows: Sequence[bytes]) -> dict[bytes, bytes]:
        """The cached answers among `rows` (sha256 digests), by digest."""
        out: dict[bytes, bytes] = {}
        unique = list(dict.fromkeys(rows))
        try:
            for a in range(0, len(unique), CHUNK):
                part = unique[a : a + CHUNK]
                marks = ",".join("?" * len(part))
                cur = self.db.execute(
                    "SELECT row, value FROM answers WHERE endpoint = ? AND model = ? AND "
                    f"output = ? AND row IN ({marks})",
                    (*scope, *part),
                )
                out.update((bytes(r), bytes(v)) for r, v in cur)
        except sqlite3.Error as e:
            raise LineageError(f"{self.path}: cannot read the query cache ({e})") from None
        return out

    def put(self, scope: Sequence[str], answers: Iterable[tuple[bytes, bytes]]) -> None:
        """Store one reply's answers, all or none."""
        try:
            with self.db:  # isolation_level=None: `with` still wraps one transaction
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany(
                    "INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?, ?)",
                    ((*scope, r, v) for r, v in answers),
                )
        except sqlite3.Error as e:
            raise LineageError(f"{self.path}: cannot write the query cache ({e})") from None

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        self.db.close()
