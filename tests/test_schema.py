"""metrics.json's keys: the README's table is the code's, and no evidence carries a verdict."""

import dataclasses

from conftest import ROOT

from lineage import schema
from lineage.evaluate import evidence
from lineage.evaluate.verdict import Decision


def test_the_readme_metrics_table_is_generated_from_the_code():
    readme = (ROOT / "README.md").read_text()
    assert schema.readme_block(readme) == schema.table(), (
        "README's metrics table is stale: paste `python -m lineage.schema` between the markers"
    )


def test_no_evidence_result_holds_a_verdict_field():
    verdict_fields = {f.name for f in dataclasses.fields(Decision)} - {"reason"}
    for kind in evidence.kinds():
        cls = schema._result_class(kind)
        assert cls is not None, kind.name
        fields = {f.name for f in dataclasses.fields(cls)}
        assert not fields & verdict_fields, (kind.name, fields & verdict_fields)
        assert not any(f.startswith(("p_", "is_")) for f in fields), kind.name


def test_every_documented_field_has_its_meaning():
    for keys, meaning in schema.rows():
        assert keys.startswith("`") and meaning, keys
    assert "`barrier`: the path's rise" in schema.table()
