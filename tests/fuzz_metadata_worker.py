"""Child process of tests/test_io_fuzz.py::test_metadata_driven_builds_under_a_memory_limit.

    python tests/fuzz_metadata_worker.py TMPDIR EXAMPLES SEED

Hypothesis writes model files whose metadata (`arch`, `arch.kwargs`, `spec`, `record`)
is hostile, and each case goes through what lineage does with such a file: load it,
look it up in the zoo, judge it. Run under a memory limit by the test. Prints one JSON
line: cases, the slowest case's seconds, crashes (anything but a result or a
LineageError), and outcome counts.
"""

import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from lineage import models
from lineage.errors import LineageError
from lineage.evaluate.basin import determine
from lineage.zoo import Zoo

tmp, examples, rng_seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
parent = models.build("mlp", 10, 1, 8, hidden=[16, 16]).eval()
suspect = models.build("mlp", 10, 1, 8, hidden=[12, 16]).eval()  # structurally pruned shape
x, y = torch.rand(64, 1, 8, 8), torch.arange(64) % 10
good = models.save(parent, tmp / "good.safetensors", {"id": "g"})
raw = good.read_bytes()
n = int.from_bytes(raw[:8], "little")
HEADER, BODY = json.loads(raw[8 : 8 + n]), raw[8 + n :]
BASE = json.loads(HEADER["__metadata__"]["lineage"])
stats = {"cases": 0, "max_s": 0.0, "crashes": [], "outcomes": Counter()}


def write(meta, name="case.safetensors"):
    header = {**HEADER, "__metadata__": {**HEADER["__metadata__"], "lineage": json.dumps(meta)}}
    blob = json.dumps(header).encode()
    p = tmp / name
    p.write_bytes(len(blob).to_bytes(8, "little") + blob + BODY)
    return p


def case(kind, fn):
    t0 = time.perf_counter()
    try:
        fn()
        outcome = "accepted"
    except LineageError:
        outcome = "refused"
    except Exception as e:  # a crash: anything but a clear refusal
        outcome = "crash"
        stats["crashes"].append(f"{kind}: {type(e).__name__}: {str(e)[:200]}")
    dt = time.perf_counter() - t0
    stats["cases"] += 1
    stats["max_s"] = max(stats["max_s"], dt)
    by_kind = stats.setdefault("max_s_by_kind", {})
    by_kind[kind] = max(by_kind.get(kind, 0.0), dt)
    stats["outcomes"][f"{kind}:{outcome}"] += 1


BIG = st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, 7, 16, 40000, 10**9, 2**63])
NUM = BIG | st.floats(allow_nan=True, allow_infinity=True) | st.booleans() | st.none()
WIDTHS = st.lists(BIG, max_size=12) | st.lists(NUM, max_size=300) | NUM | st.text(max_size=9)
JSON = st.recursive(
    NUM | st.text(max_size=6),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=12,
)
KWARG_NAMES = st.sampled_from(["hidden", "channels", "width", "mid", "bogus"])
FUZZ = settings(
    max_examples=examples,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@seed(rng_seed)
@FUZZ
@given(
    name=st.sampled_from(["mlp", "lenet", "resnet18", "vgg11"]),
    kwargs=st.dictionaries(KWARG_NAMES, WIDTHS, max_size=3),
    num_classes=BIG,
    in_channels=BIG,
    size=st.lists(BIG, min_size=1, max_size=3),
)
def arch(name, kwargs, num_classes, in_channels, size):
    a = {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "input_size": size,
        "kwargs": kwargs,
    }
    case("arch", lambda: models.load(write({**BASE, "arch": a})))
    case("kwargs", lambda: models.load(write({**BASE, "arch": {**BASE["arch"], "kwargs": kwargs}})))


zoo = Zoo(tmp / "zoo")
KEY = {"seed": 0, "what": "the key asked for"}


def retrain():
    return models.build("mlp", 10, 1, 8, hidden=[16, 16]), {}


@seed(rng_seed)
@FUZZ
@given(spec=JSON, mid=st.sampled_from([Zoo.model_id(KEY), "m-other"]) | JSON)
def spec(spec, mid):
    zoo.path(Zoo.model_id(KEY)).write_bytes(write({**BASE, "id": mid, "spec": spec}).read_bytes())

    def run():
        _, meta, trained = zoo.get_or_train(KEY, retrain, "parent")
        assert trained and meta["spec"] == KEY, "a file with another key was used"

    case("spec", run)


KEPT = st.dictionaries(
    st.sampled_from(["features.1", "features.3", "features.1.weight", "head", "x"])
    | st.text(max_size=4),
    st.lists(BIG, max_size=20)
    | st.lists(st.integers(0, 15), min_size=12, max_size=12, unique=True)
    | JSON,
    max_size=3,
)
RECORDS = (
    st.recursive(
        st.fixed_dictionaries({}, optional={"kept_channels": KEPT | JSON, "task": JSON}),
        lambda r: st.fixed_dictionaries(
            {
                "chain": st.lists(
                    st.fixed_dictionaries({}, optional={"record": r | JSON, "name": JSON}),
                    max_size=3,
                )
                | JSON
            }
        ),
        max_leaves=4,
    )
    | JSON
)


sraw = models.save(suspect, tmp / "s0.safetensors", {"id": "s"}).read_bytes()
sn = int.from_bytes(sraw[:8], "little")
SUSPECT_HEADER, SUSPECT_BODY = json.loads(sraw[8 : 8 + sn]), sraw[8 + sn :]


def with_record(rec):
    """The suspect's file, its metadata carrying `rec` as the lineage record."""
    header = json.loads(json.dumps(SUSPECT_HEADER))
    meta = json.loads(header["__metadata__"]["lineage"])
    meta["record"] = rec
    header["__metadata__"]["lineage"] = json.dumps(meta)
    blob = json.dumps(header).encode()
    p = tmp / "record.safetensors"
    p.write_bytes(len(blob).to_bytes(8, "little") + blob + SUSPECT_BODY)
    return p


@seed(rng_seed)
@FUZZ
@given(record=RECORDS)
def record(record):
    cfg = {"align_rounds": 2}
    # as `lineage compare` passes it: the record from the suspect's file
    case("record", lambda: determine(parent, suspect, x, y, cfg, suspect_record=record))

    def from_file():
        s, meta = models.load(with_record(record))
        determine(parent, s, x, y, cfg, suspect_record=meta.get("record"))

    case("record-file", from_file)


# Warm-up, not counted: the first call of each path pages in code and builds caches.
models.load(good)
determine(parent, suspect, x, y, {"align_rounds": 2})
# the trunk route's first L-BFGS step imports much of torch's optimizer machinery
determine(parent, suspect, x, y, {"align_rounds": 2}, suspect_record={"task": 1})
arch()
spec()
record()
print(json.dumps({**stats, "outcomes": dict(stats["outcomes"])}))
