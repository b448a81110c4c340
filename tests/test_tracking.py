"""The trackers' verdict table: one row per pair, a p-value and headline value per kind of
evidence, whatever kinds are registered (the W&B run itself is read back in
tests/test_pipeline.py::test_wandb_offline_run_holds_summary)."""

import csv
from types import SimpleNamespace

from lineage.engine import Verdict
from lineage.evaluate import evidence
from lineage.evaluate.verdict import Decision
from lineage.tracking import CSVTracker, verdict_table


def verdict(is_lineage, p, **values):
    kinds = {k.name: k for k in evidence.kinds()}
    ev = {n: SimpleNamespace(**{kinds[n].headline: v}) for n, v in values.items()}
    d = Decision(is_lineage, min(p.values()), 0.05, 1.0, "", 3, True, p=p)
    return Verdict(d, {**{n: None for n in kinds}, **ev})


def test_one_row_per_pair_and_a_column_pair_per_kind(tmp_path):
    first = evidence.kinds()[0]
    pairs = [
        ("derived", verdict(True, {first.name: 0.001}, **{first.name: 0.25})),
        ("independent.0", verdict(False, {first.name: 0.5}, **{first.name: 0.75})),
    ]
    columns, rows = verdict_table(pairs)
    assert columns[:4] == ["pair", "answer", "p_value", "decided_by"]
    assert columns[4:] == [
        c for k in evidence.kinds() for c in (f"{k.name}.p", f"{k.name}.{k.headline}")
    ]
    by = {r[0]: dict(zip(columns, r)) for r in rows}
    assert by["derived"]["answer"] == "lineage" and by["independent.0"]["answer"] == "not lineage"
    assert by["derived"][f"{first.name}.{first.headline}"] == 0.25
    assert by["independent.0"][f"{first.name}.p"] == 0.5
    for k in evidence.kinds()[1:]:  # did not apply: empty, not made up
        assert (
            by["derived"][f"{k.name}.p"] is None and by["derived"][f"{k.name}.{k.headline}"] is None
        )
    CSVTracker(tmp_path).log_verdicts(pairs)
    with (tmp_path / "verdicts.csv").open() as f:
        got = list(csv.reader(f))
    assert got[0] == columns and [r[0] for r in got[1:]] == ["derived", "independent.0"]
