"""Small shared helpers: atomic writes, hashing, seeding, provenance."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .text import shorten


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write via a temp file in the same directory, fsync, then rename.

    A reader (or a job killed mid-write) sees either the old file or the new one,
    never a half-written file: os.replace is atomic on POSIX within a filesystem.
    A failed write (disk full, file too large, name too long) raises WriteError, one
    line naming the file, and leaves no temp file behind.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=".tmp")
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make results private to one user
        with os.fdopen(fd, "wb") as f:
            f.write(raw)  # a buffered write: a short write raises, it is never silent
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, e) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_error(path: Path, e: OSError) -> OSError:
    from .errors import WriteError

    if isinstance(e, WriteError):
        return e
    why = e.strerror or str(e)
    hint = " (is the disk full?)" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
    return WriteError(f"cannot write {shorten(path)}: {why}{hint}")


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one record as one line, whole or not at all as far as readers can tell.

    One O_APPEND write (atomic for small lines on POSIX), so parallel jobs never
    interleave records; callers that need dedup hold a lock. A short write (disk full,
    file-size limit) is continued, and if the rest cannot be written it raises
    WriteError: a record is never dropped silently. A torn tail left by an earlier
    failure never swallows this record: when the file does not end in a newline, the
    record starts on a fresh line (readers skip the torn fragment, see zoo.read_jsonl).
    """
    path = Path(path)
    text = line.rstrip("\n")
    if "\n" in text:
        raise ValueError("append_line: one record per line (the text holds a newline)")
    data = (text + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        if not _ends_with_newline(path):
            data = b"\n" + data
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            if n <= 0:  # POSIX never returns 0 for a regular file; refuse to spin
                raise OSError(errno.EIO, "write made no progress")
            view = view[n:]
        os.fsync(fd)
    except OSError as e:
        raise _write_error(path, e) from None
    finally:
        os.close(fd)


def _ends_with_newline(path: Path) -> bool:
    """True for an empty file or one whose last byte is a newline."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def check_writable(
    directory: str | Path, need_bytes: int = 0, what: str = "", largest: int | None = None
) -> None:
    """Fail now, in one line, if `directory` cannot take `need_bytes` more, in files of at
    most `largest` bytes (default: one file of `need_bytes`): before the long work whose
    results would be written there, not after it.

    Creates the directory and a probe file, reserves `largest` bytes in it with
    posix_fallocate (which allocates blocks without writing them, and fails like a real
    write under a file-size limit or on a full disk), removes it, and checks that the
    file system has `need_bytes` free."""
    from .errors import WriteError

    d = Path(directory)
    label = f"{what} {shorten(d)}" if what else shorten(d)
    one = need_bytes if largest is None else min(largest, need_bytes)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=d, prefix=".write-probe.", suffix=".tmp")
    except OSError as e:
        raise WriteError(f"cannot write to {label}: {e.strerror or e}") from None
    try:
        if one > 0 and hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, one)
        st = os.statvfs(d)
        if need_bytes > st.f_bavail * st.f_frsize:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as e:
        raise WriteError(
            f"cannot write to {label}: {e.strerror or e} while reserving "
            f"{need_bytes / 2**20:.1f} MB for the results (is the disk full?)"
        ) from None
    finally:
        os.close(fd)
        Path(probe).unlink(missing_ok=True)


# A file or directory name may have at most 255 bytes on every common filesystem.
NAME_MAX = 255


def safe_dirname(name: str, limit: int = 128) -> str:
    """`name` as one directory name no longer than `limit` bytes. A `/` (an absolute path
    in an override: `data.root=/x`) is written %2F and a `%` %25, so a job's folder stays
    one level under its sweep and distinct names stay distinct; a name past `limit` keeps
    its readable start plus a hash of the whole name, so the same name always maps to the
    same folder (resume works)."""
    name = name.replace("%", "%25").replace("/", "%2F")
    if name in (".", ".."):  # not a folder of its own
        name = name.replace(".", "%2E")
    raw = name.encode()
    if len(raw) <= limit:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:16]
    head = raw[: limit - len(digest) - 1].decode("utf-8", errors="ignore")
    return f"{head}~{digest}"


def loads_json(text: str | bytes, max_depth: int = 64) -> Any:
    """json.loads for untrusted text: nesting deeper than `max_depth` is a ValueError
    (json.JSONDecodeError's base), like any other malformed JSON, instead of a
    RecursionError later, in whatever walks the value."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
    if _depth(value, max_depth) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return value


def read_yaml(path: str, flag: str) -> Any:
    """The resolved contents of the YAML file that the command-line option `flag` names; a
    missing or unreadable file is one line naming both."""
    from omegaconf import OmegaConf  # only the commands that take a YAML file pay for it

    from .errors import LineageError

    p = Path(path)
    if not p.is_file():
        raise LineageError(f"{flag} {path}: no such file")
    try:
        return OmegaConf.to_container(OmegaConf.load(p), resolve=True)
    except Exception as e:  # noqa: BLE001  (YAML and interpolation errors)
        raise LineageError(f"{flag} {path}: not a readable YAML config ({e})") from None


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, iteratively, stopping once past `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def stable_hash(obj: Any, n: int = 12) -> str:
    """Hash of a JSON-able object that does not depend on key order."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def git_sha() -> str:
    """The commit of the code that produced a result ('unknown' outside a checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        sha = out.stdout.strip()
        if out.returncode != 0 or not sha:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in (
        "torch",
        "pytorch-lightning",
        "hydra-core",
        "omegaconf",
        "wandb",
        "numpy",
        "pandas",
        "scikit-learn",
        "safetensors",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def seed_all(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: metrics.json keys are flat and dotted."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
