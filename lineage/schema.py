"""The keys of a job's metrics.json, described from the code that writes them.

The verdict's keys come from lineage.evaluate.verdict.Decision, each evidence's from its
result dataclass (the registered kinds, lineage.evaluate.evidence), and each field's
meaning from the comment beside it in the source, so the README's table cannot drift from
what a job writes: `python -m lineage.schema` prints the table, and a test holds the
README's copy (between the `metrics-table` markers) to it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any

from .evaluate import evidence
from .evaluate.verdict import Decision

START, END = "<!-- metrics-table:start -->", "<!-- metrics-table:end -->"

FIXED = [
    ("`modification`, `ratio`, `data`, `model`, `seed`", "what ran"),
    (
        "`git_sha`, `config_hash`, `versions.<package>`",
        "provenance (`-dirty` marks uncommitted code)",
    ),
    ("`parent.id`, `parent.path`, `parent.accuracy`", "the parent (test accuracy)"),
    (
        "`derived.id`, `derived.path`, `derived.accuracy`, `derived.<effect>`",
        "the derived model and the modification's measured effect (table above)",
    ),
]
TAIL = [
    (
        "`independent.accuracy`, `independent.false_positives`, "
        "`independent.evidence.<evidence>.{min, max}`",
        "the references: mean accuracy, how many were judged lineage against the others, "
        "and the range of each evidence's headline value",
    ),
    (
        "`independent.<i>.{id, path, accuracy, verdict.*, evidence.*}`",
        "each reference, judged against the other references like a suspect",
    ),
    (
        "`time.{parent_s, derive_s, <evidence>_s, sources_s, total_s}`",
        "seconds per stage, and per kind of evidence (calibration and judging); `sources_s`: "
        "the suspect-centred kinds measured with each reference in the parent's place",
    ),
]


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's trailing comment in the source ("" where it has none)."""
    docs = {f.name: "" for f in dataclasses.fields(cls)}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
        if m and m.group(1) in docs:
            docs[m.group(1)] = m.group(2).strip()
    return docs


def _result_class(kind: evidence.Kind) -> type | None:
    """The dataclass `measure` returns, from its annotation (None or a Union allowed)."""
    hint = typing.get_type_hints(kind.measure).get("return")
    for t in (hint, *typing.get_args(hint)):
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            return t
    return None


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _keys(names: list[str]) -> str:
    return "{" + ", ".join(names) + "}"


def _meaning(cls: type, skip: tuple[str, ...] = ()) -> str:
    docs = field_docs(cls)
    parts = [f"`{k}`: {v}" for k, v in docs.items() if v and k not in skip]
    return "; ".join(parts)


def rows() -> list[tuple[str, str]]:
    out = list(FIXED)
    names = [f.name for f in dataclasses.fields(Decision)]
    head = _first_paragraph(Decision.__doc__)
    out.append(
        (
            f"`derived.verdict.{_keys(names)}`",
            f"{head} `p.<evidence>` and `says.<evidence>` per kind of evidence; "
            + _meaning(Decision, ("p", "says")),
        )
    )
    for kind in evidence.kinds():
        cls = _result_class(kind)
        if cls is None:
            continue
        fields = [f.name for f in dataclasses.fields(cls) if f.name != "points"]
        what = _first_paragraph(type(kind).__doc__) or kind.name
        out.append((f"`derived.evidence.{kind.name}.{_keys(fields)}`", f"{what} {_meaning(cls)}"))
    out.append(
        (
            "`derived.evidence.<evidence>.against`",
            "a suspect-centred evidence's headline value with each reference in the parent's "
            "place (its p is measured against these, on the verdict's scale: "
            "`derived.verdict.against.<evidence>`)",
        )
    )
    return out + TAIL


def table() -> str:
    lines = ["| keys | meaning |", "|---|---|"]
    for keys, meaning in rows():
        lines.append(f"| {keys} | {meaning.replace('|', '&#124;')} |")
    return "\n".join(lines)


def readme_block(text: str) -> str:
    """The table as the README holds it between the markers ("" when there are none)."""
    if START not in text or END not in text:
        return ""
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def main(argv: Any = None) -> None:
    print(table())


if __name__ == "__main__":
    main()
