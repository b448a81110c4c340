"""Fuzz lineage.models.load: whatever the bytes, the answer is LineageError, quickly."""

import io
import json
import pickle
import struct
import zipfile

import pytest
import torch
from conftest import HANG_S
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lineage import models
from lineage.errors import LineageError

FUZZ = settings(
    max_examples=150,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    m = models.build("lenet", 10, 1, 8)
    return models.save(m, tmp_path_factory.mktemp("good") / "good.safetensors", {"id": "g"})


def load_bytes(tmp_path, blob: bytes, name: str = "fuzz.safetensors"):
    p = tmp_path / name
    p.write_bytes(blob)
    with pytest.raises(LineageError, match=name):
        models.load(p)


def split(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def join(header, body):
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + body


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(tmp_path, blob):
    load_bytes(tmp_path, blob)


@FUZZ
@given(st.data())
def test_truncated(tmp_path, good, data):
    raw = good.read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    load_bytes(tmp_path, raw[:cut])


@FUZZ
@given(st.integers(min_value=2**20 * 16 + 1, max_value=2**64 - 1), st.binary(max_size=64))
def test_huge_declared_header(tmp_path, n, rest):
    load_bytes(tmp_path, struct.pack("<Q", n) + rest)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(
    key=st.sampled_from(
        ["arch", "id", "seed", "accuracy", "format", "lineage", "data", "parent_id", "ratio"]
    ),
    value=JSONISH,
)
def test_metadata_wrong_types(tmp_path, good, key, value):
    header, body = split(good)
    meta = json.loads(header["__metadata__"]["lineage"])
    if meta.get(key) == value:
        return
    meta[key] = value
    header["__metadata__"]["lineage"] = json.dumps(meta)
    p = tmp_path / "fuzz.safetensors"
    p.write_bytes(join(header, body))
    try:
        models.load(p)
    except LineageError as e:
        assert "fuzz.safetensors" in str(e)
    else:  # only values that are valid for the key may load
        assert key in ("id", "accuracy", "data", "lineage", "parent_id", "ratio", "seed")


@FUZZ
@given(
    arch_kw=st.dictionaries(
        st.sampled_from(["channels", "hidden", "width", "bogus"]), JSONISH, min_size=1, max_size=2
    )
)
def test_shapes_disagree_with_architecture(tmp_path, good, arch_kw):
    header, body = split(good)
    meta = json.loads(header["__metadata__"]["lineage"])
    meta["arch"]["kwargs"] = arch_kw
    header["__metadata__"]["lineage"] = json.dumps(meta)
    load_bytes(tmp_path, join(header, body))


@FUZZ
@given(st.data())
def test_forged_tensor_entries(tmp_path, good, data):
    header, body = split(good)
    k = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    header[k][field] = data.draw(JSONISH | st.lists(st.integers(-(2**63), 2**64), max_size=4))
    load_bytes(tmp_path, join(header, body))


def test_really_a_pickle(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    load_bytes(tmp_path, pickle.dumps({"state_dict": Boom()}))


def test_zip_mimicking_torch_checkpoint(tmp_path):
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf)
    load_bytes(tmp_path, buf.getvalue())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("model/byteorder", "little")
    load_bytes(tmp_path, buf.getvalue())


# ---- metadata-driven builds, under a memory limit -----------------------------------------
#
# What a model file's metadata makes lineage build or index: the architecture (`arch`,
# `arch.kwargs`), the zoo's key check (`spec`), the basin test's route (`record`: kept
# channels, chains). Hypothesis runs inside a child process limited to 1 GiB of address
# space, so a case that allocated what the metadata asks for would be a MemoryError (a
# crash) or an OOM kill (the child dies): the answer must be a result or a LineageError.
# The child is tests/fuzz_metadata_worker.py.
WORKER = __import__("pathlib").Path(__file__).with_name("fuzz_metadata_worker.py")


@pytest.mark.slow
def test_metadata_driven_builds_under_a_memory_limit(tmp_path):
    import os
    import random
    import resource
    import subprocess
    import sys
    from pathlib import Path

    rng_seed = random.randrange(2**32)
    examples = 60

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2**30, resource.RLIM_INFINITY))

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    r = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path), str(examples), str(rng_seed)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        env=env,
        preexec_fn=limit,
    )
    assert r.returncode == 0, f"seed {rng_seed}: child died ({r.returncode}): {r.stderr[-3000:]}"
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"seed {rng_seed}:", stats)
    assert stats["crashes"] == [], f"seed {rng_seed}"
    assert stats["cases"] >= 5 * examples
    out = stats["outcomes"]
    # the hostile architectures are refused, and every spec case retrained
    assert out.get("arch:refused", 0) > 0.8 * examples and out.get("spec:refused", 0) == 0


def test_a_header_of_100k_tensors_is_refused_before_it_is_parsed(tmp_path, good, monkeypatch):
    """Counted first (issue 25, item 9): parsing and walking 100k entries took 17 s."""
    from lineage.models import tensorfile

    header, body = split(good)
    end = len(body)
    for i in range(100_000):
        header[f"t{i}"] = {"dtype": "F32", "shape": [0], "data_offsets": [end, end]}
    path = tmp_path / "many.safetensors"
    path.write_bytes(join(header, body))

    def parsed(*a, **k):
        raise AssertionError("the header was parsed before its tensors were counted")

    monkeypatch.setattr(tensorfile, "loads_json", parsed)
    with pytest.raises(LineageError, match=r"declares 100\d\d\d tensors \(at most 10000\)"):
        models.load(path)
