"""The on-disk cache of answered queries: an interrupted audit resumes without paying for
what was answered, and a rerun of the same audit is free.

One SQLite file (stdlib `sqlite3`; nothing is pickled). A row's key is (endpoint, model
and its versions, output, sha256 of the input row's float32 bytes); its value the answer's
raw bytes: the logits as little-endian float32, or a label as int64. Each reply's answers
go in with one transaction, so a process killed mid-write leaves the reply's answers all
there or all absent (SQLite's journal; WAL mode: concurrent audits share the file).

The file is only data, and whoever can write it could flip an audit's verdict by editing
answers (issue 25). So each row carries an HMAC-SHA256 of its key and value under a key
kept outside the cache folder (`key_path`: $LINEAGE_CACHE_KEY, else
$XDG_CONFIG_HOME/lineage/cache.key or ~/.config/lineage/cache.key, made on first use, mode
0600). A row whose MAC fails, whose value is not a BLOB or is oversized (read by SQLite's
typeof and length, so a huge INTEGER or TEXT is never materialised) is refused: its query
is asked again and the fresh answer replaces it, with one warning line per cache opened.
Values read back are also checked like replies (`RemoteModel`). The API key is never part
of a key or a value.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import LineageError
from ..text import printable

if TYPE_CHECKING:
    from .protocol import Wire

log = logging.getLogger(__name__)

FILE = "queries.sqlite"
FORMAT = "lineage-query-cache/2"
OLD_FORMATS = ("lineage-query-cache/1",)  # rows without MACs: dropped, asked again
CHUNK = 500  # keys per SELECT (SQLite's parameter limit is 999 on old builds)
MAX_VALUE = 4 * 2**16  # bytes of one answer: logits of at most 65536 classes
KEY_ENV = "LINEAGE_CACHE_KEY"


def key_path() -> Path:
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV])
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "lineage" / "cache.key"


def load_key(path: Path) -> bytes:
    """The cache's MAC key (32 bytes, hex in the file), made on first use: written to a
    private temp file and linked into place, so two audits starting at once agree on it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(32).hex() + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:  # another audit made it first: use theirs
                pass
        finally:
            tmp.unlink(missing_ok=True)
    with path.open("rb") as f:
        text = f.read(4096)
    m = re.fullmatch(rb"\s*([0-9a-f]{64})\s*", text)
    if not m:
        raise LineageError(
            f"{printable(path)}: not a query cache key (64 hex digits); delete it to make a "
            "new one (the cached answers are then asked again)"
        )
    return bytes.fromhex(m.group(1).decode())


def _mac(key: bytes, scope: Sequence[str], row: bytes, value: bytes) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in (FORMAT.encode(), *(s.encode() for s in scope), row, value):
        h.update(len(part).to_bytes(8, "little"))  # lengths first: no two splits collide
        h.update(part)
    return h.digest()


class QueryCache:
    def __init__(self, folder: str | Path, key_file: str | Path | None = None):
        self.path = Path(folder) / FILE
        self.refused = 0  # rows that failed their check (this process)
        kp = Path(key_file) if key_file is not None else key_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if kp.resolve().is_relative_to(self.path.parent.resolve()):
                raise LineageError(
                    f"the cache key {printable(kp)} must be kept outside the cache folder "
                    f"{printable(self.path.parent)}, which it protects"
                )
            try:
                self.key = load_key(kp)
            except OSError as e:
                raise LineageError(
                    f"{printable(kp)}: cannot read or make the query cache key "
                    f"({printable(e.strerror or e)}); set {KEY_ENV} to a writable path"
                ) from None
            # one caller at a time (RemoteModel), but not always the thread that opened it
            self.db = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed process loses nothing
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
            (fmt,) = self.db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if fmt in OLD_FORMATS:
                log.warning(
                    "%s: an older cache without MACs; its answers are dropped and asked again",
                    printable(self.path),
                )
                with self.db:
                    self.db.execute("BEGIN IMMEDIATE")
                    self.db.execute("DROP TABLE IF EXISTS answers")
                    self.db.execute("UPDATE meta SET value = ? WHERE key = 'format'", (FORMAT,))
                fmt = FORMAT
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS answers (endpoint TEXT NOT NULL, model TEXT NOT "
                "NULL, output TEXT NOT NULL, row BLOB NOT NULL, value BLOB NOT NULL, mac BLOB "
                "NOT NULL, PRIMARY KEY (endpoint, model, output, row)) WITHOUT ROWID"
            )
        except (sqlite3.Error, OSError) as e:
            raise LineageError(
                f"{printable(self.path)}: not a usable query cache ({printable(e)}); move it "
                "away or pass another --cache"
            ) from None
        if fmt != FORMAT:
            raise LineageError(
                f"{printable(self.path)}: cache format {printable(fmt)!r}, expected {FORMAT!r}"
            )

    def refuse(self, n: int, why: str) -> None:
        """Count `n` cached answers as refused (they are asked again); one warning line."""
        if n and not self.refused:
            log.warning(
                "%s: %d cached answers refused (%s); asking again",
                printable(self.path),
                n,
                why,
            )
        self.refused += n

    def get(self, scope: Sequence[str], rows: Sequence[bytes]) -> dict[bytes, bytes]:
        """The cached answers among `rows` (sha256 digests) whose MAC holds, by digest."""
        out: dict[bytes, bytes] = {}
        bad = 0
        unique = list(dict.fromkeys(rows))
        try:
            for a in range(0, len(unique), CHUNK):
                part = unique[a : a + CHUNK]
                marks = ",".join("?" * len(part))
                # only a BLOB of bounded length is read: bytes(v) of an INTEGER n allocates
                # n bytes, and of TEXT raises
                cur = self.db.execute(
                    "SELECT row, CASE WHEN typeof(value) = 'blob' AND length(value) <= ? "
                    "THEN value END, CASE WHEN typeof(mac) = 'blob' AND length(mac) = 32 "
                    "THEN mac END FROM answers WHERE endpoint = ? AND model = ? AND "
                    f"output = ? AND row IN ({marks})",
                    (MAX_VALUE, *scope, *part),
                )
                for r, v, m in cur:
                    r = bytes(r)
                    if v is None or m is None:
                        bad += 1
                    elif hmac.compare_digest(bytes(m), _mac(self.key, scope, r, bytes(v))):
                        out[r] = bytes(v)
                    else:
                        bad += 1
        except sqlite3.Error as e:
            raise LineageError(
                f"{printable(self.path)}: cannot read the query cache ({printable(e)})"
            ) from None
        self.refuse(bad, "altered, retyped or oversized, or written under another key")
        return out

    def put(self, scope: Sequence[str], answers: Iterable[tuple[bytes, bytes]]) -> None:
        """Store one reply's answers, all or none; they replace refused rows."""
        try:
            with self.db:  # isolation_level=None: `with` still wraps one transaction
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany(
                    "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                    ((*scope, r, v, _mac(self.key, scope, r, v)) for r, v in answers),
                )
        except sqlite3.Error as e:
            raise LineageError(
                f"{printable(self.path)}: cannot write the query cache ({printable(e)})"
            ) from None

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def encode_answer(v: np.ndarray, w: Wire) -> bytes:
    """A row's answer as stored: a label as int64, logits as float32, little-endian."""
    return np.asarray(v, dtype="<i8" if w.kind == "labels" else "<f4").tobytes()


def decode_answer(raw: bytes, w: Wire) -> np.ndarray:
    """A stored answer, checked like a reply (ValueError says why); the first logits set
    `w.num_classes` if the metadata did not."""
    if w.kind == "labels":
        if len(raw) != 8:
            raise ValueError(f"a cached label is {len(raw)} bytes, not 8")
        v = np.frombuffer(raw, dtype="<i8")[0]
        if v < 0 or (w.num_classes is not None and v >= w.num_classes):
            raise ValueError(f"a cached label {v} is out of range")
        return np.asarray(v, dtype=np.int64)
    c = w.num_classes
    if len(raw) % 4 or not raw or (c is not None and len(raw) != 4 * c):
        raise ValueError(f"a cached answer has {len(raw)} bytes, not 4 x {c}")
    z = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(z).all():
        raise ValueError("a cached answer holds NaN or Inf")
    if c is None:
        w.num_classes = len(z)
    return z
