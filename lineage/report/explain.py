"""Each job's verdict in words, rebuilt from its metrics row: the answer, the combined p
against alpha, which evidence decided, and for every kind of evidence its p-value, its
headline value and where that value sits among the references' (the `Verdict.explain` of
lineage.engine, which needs the live calibration; a report has only metrics.json).

Where a value sits is said on the verdict's own scale when the kind's `statistic` can be
applied to the recorded fields (lineage.evaluate.verdict: p is a prediction-interval p of
that statistic against the references'), so the sentence says why p is what it is, e.g.
a suspect tied with the most parent-like references gets the same p whatever it is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from ..evaluate.verdict import answer
from ..results import isna
from ..text import printable
from .collect import job_config

TIE = 1e-9  # two values on the verdict's scale closer than this are one value


@dataclass
class KindEvidence:
    """One kind of evidence for one job: the suspect's value among the references'."""

    kind: str
    headline: str
    scale: str  # the verdict scale in words (Kind.scale)
    value: float | None  # the suspect's headline value
    refs: list[tuple[str, float]]  # (reference id, its headline value)
    p: float | None
    says: bool | None  # this evidence alone says lineage at alpha
    stat: float | None = None  # the suspect on the verdict's scale
    flat: bool = False  # its value is on a flat stretch of that scale (a floor or a clip)
    ref_stats: list[tuple[str, float]] = field(default_factory=list)
    why: str = ""
    centred: bool = False  # suspect-centred: `refs` are each reference in the parent's place

    @property
    def ref_range(self) -> tuple[float, float] | None:
        vals = [v for _, v in self.refs]
        return (min(vals), max(vals)) if vals else None


@dataclass
class Explanation:
    job: str
    answer: str  # lineage | not lineage | undetermined
    p_value: float | None
    alpha: float | None
    decided_by: str
    n_references: int | None
    kinds: list[KindEvidence]
    reason: str
    caveat: str
    links: tuple[tuple[str, str], ...] = ()  # (label, href) of the job's files

    def summary(self) -> str:
        p = "n/a" if self.p_value is None else f"{self.p_value:.3g}"
        a = "n/a" if self.alpha is None else f"{self.alpha:g}"
        cmp = ""
        if self.p_value is not None and self.alpha is not None:
            cmp = " <= " if self.p_value <= self.alpha else " > "
        else:
            cmp = " vs "
        s = f"{self.answer}: combined p = {p}{cmp}alpha {a}"
        if self.decided_by:
            s += f", decided by {self.decided_by}"
        if self.n_references is not None:
            s += f", against {self.n_references} references"
        return printable(s)

    def lines(self) -> list[str]:
        out = [self.summary()]
        for k in self.kinds:
            out.append(printable(f"{k.kind}: {k.why}"))
        if self.reason:
            out.append(printable(f"note: {self.reason}"))
        if self.caveat:
            out.append(printable(f"caution: {self.caveat}"))
        return out


def _num(v: Any) -> float | None:
    if isna(v) or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _text(v: Any) -> str:
    return "" if isna(v) else printable(v)


def kind_names(columns: Any) -> list[str]:
    """The registered kinds, then any other kind a job recorded a p-value for."""
    from ..evaluate import evidence

    names = evidence.names()
    seen = {str(k).split(".")[3] for k in columns if str(k).startswith("derived.verdict.p.")}
    return names + sorted(seen - set(names))


def _kind(name: str) -> Any:
    from ..evaluate import evidence

    return evidence.get(name) if name in evidence.names() else None


def _list(v: Any) -> list[float] | None:
    """A recorded list of numbers (a list, or its JSON text in a table), else None."""
    if isinstance(v, str) and v.startswith("["):
        try:
            v = json.loads(v)
        except ValueError:
            return None
    if isinstance(v, list) and all(isinstance(i, int | float) for i in v):
        return [float(i) for i in v]
    return None


def _fields(row: pd.Series, prefix: str) -> dict[str, Any]:
    """The recorded scalar fields under `prefix` (lists such as curves are left out)."""
    out = {}
    for k in row.index:
        if str(k).startswith(prefix) and "." not in str(k)[len(prefix) :]:
            v = row[k]
            if isinstance(v, str) and v.startswith("["):
                continue
            out[str(k)[len(prefix) :]] = None if isna(v) else v
    return out


def _statistic(kind: Any, conf: Any, fields: dict[str, Any]) -> float | None:
    """The kind's statistic of a recorded result, or None where the record lacks what it
    reads (a user's kind may need more than metrics.json keeps)."""
    if kind is None or conf is None or not fields:
        return None
    try:
        return _num(kind.statistic(SimpleNamespace(**fields), conf))
    except Exception:  # a record that is not the kind's result: no scale, still a value
        return None


def _flat(kind: Any, conf: Any, fields: dict[str, Any], headline: str) -> bool:
    """Whether nudging the headline value either way leaves the statistic unchanged: the
    value is on a floor or clip of the scale, where no value further out lowers p."""
    v, s = _num(fields.get(headline)), _statistic(kind, conf, fields)
    if v is None or s is None:
        return False
    d = abs(v) * 1e-3 + 1e-9
    nudged = [_statistic(kind, conf, {**fields, headline: v + e}) for e in (d, -d)]
    return all(n is not None and abs(n - s) <= TIE for n in nudged)


def _conf(kind: Any, cfg: dict[str, Any]) -> Any:
    if kind is None:
        return None
    for given in (cfg.get(kind.group), None):
        try:
            return kind.settings(given)
        except Exception:  # an older config's keys: the defaults still give the scale
            continue
    return None


def _references(row: pd.Series) -> list[int]:
    idx = set()
    for k in row.index:
        parts = str(k).split(".")
        if len(parts) > 2 and parts[0] == "independent" and parts[1].isdigit():
            idx.add(int(parts[1]))
    return sorted(idx)


def kind_evidence(row: pd.Series, name: str, cfg: dict[str, Any]) -> KindEvidence:
    kind = _kind(name)
    headline = kind.headline if kind is not None else "score"
    conf = _conf(kind, cfg)
    refs, ref_stats = [], []
    for i in _references(row):
        rid = _text(row.get(f"independent.{i}.id")) or f"reference {i}"
        v = _num(row.get(f"independent.{i}.evidence.{name}.{headline}"))
        if v is not None:
            refs.append((rid, v))
        s = _statistic(kind, conf, _fields(row, f"independent.{i}.evidence.{name}."))
        if s is not None:
            ref_stats.append((rid, s))
    centred = _text(row.get(f"derived.verdict.null.{name}")) == "suspect-centred"
    theirs = _list(row.get(f"derived.evidence.{name}.against"))
    stats = _list(row.get(f"derived.verdict.against.{name}"))
    if centred and theirs is not None and stats is not None:
        # its p was measured against each reference in the parent's place, not against
        # the references' own values
        refs = [(f"{i} in the parent's place", float(v)) for i, v in enumerate(theirs)]
        ref_stats = [(f"{i} in the parent's place", float(v)) for i, v in enumerate(stats)]
    says = row.get(f"derived.verdict.says.{name}")
    mine = _fields(row, f"derived.evidence.{name}.")
    e = KindEvidence(
        kind=name,
        headline=headline,
        scale=kind.scale if kind is not None else "",
        value=_num(row.get(f"derived.evidence.{name}.{headline}")),
        refs=refs,
        p=_num(row.get(f"derived.verdict.p.{name}")),
        says=None if isna(says) else bool(says),
        stat=_statistic(kind, conf, mine),
        ref_stats=ref_stats,
        flat=_flat(kind, conf, mine, headline),
        centred=centred,
    )
    e.why = _why(e)
    return e


def _why(e: KindEvidence) -> str:
    """One sentence: the value, the references' range, and why the p-value follows."""
    value = "not recorded" if e.value is None else f"{e.value:.4g}"
    head = f"{e.headline} {value}"
    if e.ref_range:
        lo, hi = e.ref_range
        whose = "with each reference in the parent's place" if e.centred else "references"
        head += f" ({whose} {lo:.4g} to {hi:.4g}, {len(e.refs)} of them)"
    if e.p is None:
        return head + "; p n/a: this evidence did not apply to the pair"
    p = f"p {e.p:.3g}" + (" (alone: lineage)" if e.says else "")
    if e.stat is None or len(e.ref_stats) < 2:
        return f"{head}; {p}"
    stats = [s for _, s in e.ref_stats]
    n, top = len(stats), max(stats)
    at_least = sum(s >= e.stat - TIE for s in stats)
    ties = sum(abs(s - e.stat) <= TIE for s in stats)
    if max(stats) - min(stats) <= TIE and ties == n:
        where = (
            "on the verdict's scale the suspect and every reference share one value, so "
            "the references cannot tell it from an independent model"
        )
    elif e.stat > top + TIE:
        where = (
            "on the verdict's scale it is more parent-like than every reference, so p is "
            "the chance an independent model goes that far beyond them"
        )
    elif e.stat < min(stats) - TIE:
        where = (
            "on the verdict's scale it is less parent-like than every reference, so this "
            "evidence gives no sign of the parent"
        )
    elif ties:
        where = (
            f"on the verdict's scale it is level with {ties} of the {n} references and "
            f"{at_least} are at least as parent-like (values that share one point of the "
            "scale, such as its floor, cannot be told apart), so p stays where those "
            "references put it"
        )
    else:
        where = (
            f"on the verdict's scale it is inside the references' range: {at_least} of "
            f"the {n} are at least as parent-like, so an independent model could give it"
        )
    if e.flat:
        where += (
            f"; its {e.headline} is on a flat stretch of the scale (a floor or clip), where "
            "any value further out gives this same p"
        )
    scale = f" (scale: {e.scale})" if e.scale else ""
    return f"{head}; {p}: {where}{scale}"


def explain_row(row: pd.Series) -> Explanation:
    d = row.get("job_dir")
    cfg = {} if isna(d) else job_config(Path(str(d))) or {}
    is_lineage = row.get("derived.verdict.is_lineage")
    said = answer(is_lineage)
    nref = _num(row.get("derived.verdict.n_references"))
    names = [
        n
        for n in kind_names(row.index)
        if any(
            str(k).startswith((f"derived.verdict.p.{n}", f"derived.evidence.{n}."))
            and not isna(row[k])
            for k in row.index
        )
    ]
    return Explanation(
        job=printable(row["job"]),
        answer=said,
        p_value=_num(row.get("derived.verdict.p_value")),
        alpha=_num(row.get("derived.verdict.alpha")),
        decided_by=_text(row.get("derived.verdict.decided_by")),
        n_references=None if nref is None else int(nref),
        kinds=[kind_evidence(row, n, cfg) for n in names],
        reason=_text(row.get("derived.verdict.reason")),
        caveat=_text(row.get("derived.verdict.caveat")),
    )


def explanations(t: pd.DataFrame) -> list[Explanation]:
    """One per job that recorded a verdict."""
    if "derived.verdict.p_value" not in t.columns:
        return []
    return [explain_row(r) for _, r in t.iterrows() if not isna(r.get("derived.verdict.p_value"))]
