"""Interrupted work must not look finished.

A scheduler stops a job with SIGTERM (then SIGKILL). Lightning catches SIGTERM itself and
ends the fit with `SIGTERMException`, a `SystemExit` without a code: left alone, a killed
`lineage compare` or `run.py` job exits 0, as if it had completed. So entry points run
under `guard`, which turns SIGTERM (and SIGHUP) into `Interrupted` and exits with
128 + the signal number (143 for SIGTERM), naming what was interrupted (`stage`) and what
that leaves (by default, results not written; a stage may say otherwise: a server has no
results, it just stopped).

Nothing half-written is left behind: every file is written by `utils.atomic_write`
(the temp file is removed when the exception passes through it), records are single
appends, and a job's metrics.json is written last, so an interrupted job is rerun.
"""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .text import printable

F = TypeVar("F", bound=Callable[..., Any])
SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)
LOST = "its results were not written (rerun to finish it)"
_stages: list[tuple[str, str]] = []  # (the work, what an interruption of it leaves)


class Interrupted(BaseException):
    """A signal stopped the work. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way (Hydra's job runner, a report's best-effort section)
    swallows it and carries on."""

    def __init__(self, signum: int, during: str = "", leaves: str = LOST):
        super().__init__(signum, during)
        self.signum = signum
        self.during = during
        self.leaves = leaves

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        where = f" while {self.during}" if self.during else ""
        return f"interrupted by {name}{where}"


def current() -> str:
    return " > ".join(w for w, _ in _stages)


def _leaves() -> str:
    return next((t for _, t in reversed(_stages) if t), LOST)


@contextmanager
def stage(what: str, leaves: str = "") -> Iterator[None]:
    """Name the work in progress, for the message an interruption prints; `leaves`: what
    an interruption of it leaves, if not LOST."""
    _stages.append((printable(what), leaves))
    try:
        yield
    finally:
        _stages.pop()


def _raise(signum: int, frame: Any) -> None:
    raise Interrupted(signum, current(), _leaves())


def from_lightning(exc: BaseException) -> Interrupted:
    """Lightning's SIGTERMException (a SystemExit with no code) as what it is."""
    return Interrupted(signal.SIGTERM, current(), _leaves())


@contextmanager
def handle_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP raise Interrupted inside this block (main thread only). Lightning
    composes its own SIGTERM handler with this one during a fit, so ours still runs."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def guard(what: str) -> Callable[[F], F]:
    """Run an entry point so that an interruption exits non-zero and says so:
    `error: <what> interrupted by SIGTERM while <stage>; <what that leaves>` on stderr,
    exit 128 + signum.
    A SystemExit without a code raised by Lightning for SIGTERM counts as one too."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                with handle_signals():
                    try:
                        return fn(*args, **kwargs)
                    except SystemExit as e:
                        if _is_lightning_sigterm(e):
                            raise from_lightning(e) from None
                        raise
            except Interrupted as e:
                print(f"error: {what} {e}; {e.leaves}", file=sys.stderr, flush=True)
                raise SystemExit(e.exit_code) from None

        return wrapper  # type: ignore[return-value]

    return deco


def _is_lightning_sigterm(e: SystemExit) -> bool:
    try:
        from pytorch_lightning.utilities.exceptions import SIGTERMException
    except ImportError:  # pragma: no cover
        return False
    return isinstance(e, SIGTERMException)
