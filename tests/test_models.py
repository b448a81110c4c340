import json
import pickle
import struct
import zipfile

import pytest
import torch

from lineage import models
from lineage.errors import LineageError


@pytest.mark.parametrize(
    "name,kw",
    [("mlp", {}), ("lenet", {}), ("resnet18", {"width": 0.125}), ("vgg11", {"width": 0.125})],
)
@pytest.mark.parametrize("c,size", [(1, 8), (1, 28), (3, 32)])
def test_architectures_build_and_run(name, kw, c, size):
    m = models.build(name, num_classes=7, in_channels=c, input_size=size, **kw)
    out = m.eval()(torch.rand(2, c, size, size))
    assert out.shape == (2, 7)
    assert isinstance(m.head, torch.nn.Linear) and m.head.out_features == 7


@pytest.mark.parametrize("name", ["hf_vit", "lenet", "mlp", "resnet18", "vgg11"])
def test_each_factory_takes_its_defaults_from_its_options(name):
    """One home for a default: a factory's signature reads its options dataclass, so the
    two agree (as lists: a signature holds an immutable tuple)."""
    import dataclasses
    import inspect

    from lineage.models.registry import OPTIONS, import_factory

    cls = OPTIONS[name]
    fn = models.MODELS.get(name) if name in models.MODELS else import_factory(cls._target_)
    given = {
        k: list(p.default) if isinstance(p.default, tuple) else p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    own = {k: v for k, v in dataclasses.asdict(cls()).items() if k not in ("name", "_target_")}
    assert given == own


def test_unknown_architecture_lists_valid():
    with pytest.raises(LineageError, match="lenet, mlp, resnet18, vgg11"):
        models.build("alexnet", 10)


def test_round_trip_bitwise(tmp_path):
    torch.manual_seed(0)
    m = models.build("resnet18", 10, 3, 32, width=0.125)
    m.train()(torch.rand(4, 3, 32, 32))  # non-trivial BN running stats
    p = models.save(m, tmp_path / "m.safetensors", {"id": "m-1", "seed": 3, "accuracy": 0.5})
    m2, meta = models.load(p)
    sd1, sd2 = m.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert sd1[k].dtype == sd2[k].dtype and torch.equal(sd1[k], sd2[k]), k
    assert meta["id"] == "m-1" and meta["seed"] == 3 and meta["arch"]["name"] == "resnet18"
    assert meta["git_sha"] and meta["created"]


def save_small(tmp_path, **meta):
    m = models.build("mlp", 3, 1, 4, hidden=[5])
    return models.save(m, tmp_path / "m.safetensors", {"id": "x", **meta}), m


def test_pickle_payload_refused(tmp_path):
    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(LineageError, match="evil.safetensors"):
        models.load(p)


def test_torch_zip_checkpoint_refused(tmp_path):
    p = tmp_path / "ckpt.safetensors"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
        z.writestr("archive/version", "3")
    with pytest.raises(LineageError, match="ckpt.safetensors"):
        models.load(p)


def test_truncated_refused(tmp_path):
    p, _ = save_small(tmp_path)
    raw = p.read_bytes()
    for cut in (3, 20, len(raw) // 2, len(raw) - 1):
        p.write_bytes(raw[:cut])
        with pytest.raises(LineageError, match="m.safetensors"):
            models.load(p)


def test_forged_header_refused(tmp_path):
    p, _ = save_small(tmp_path)
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    # Point a tensor's offsets past the end of the file.
    k = next(k for k in header if k != "__metadata__")
    header[k]["data_offsets"] = [0, 10**9]
    blob = json.dumps(header).encode()
    p.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])
    with pytest.raises(LineageError, match="outside the file"):
        models.load(p)
    # A huge declared header length is refused before anything is allocated.
    p.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(LineageError, match="declared header"):
        models.load(p)


def _rewrite_meta(p, fn):
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["lineage"])
    fn(meta, header)
    header["__metadata__"]["lineage"] = json.dumps(meta)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    p.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n :])


def test_shape_mismatch_named(tmp_path):
    p, _ = save_small(tmp_path)
    _rewrite_meta(p, lambda meta, h: meta["arch"]["kwargs"].update(hidden=[6]))
    with pytest.raises(LineageError, match="architecture expects"):
        models.load(p)


def test_unknown_arch_in_file(tmp_path):
    p, _ = save_small(tmp_path)
    _rewrite_meta(p, lambda meta, h: meta["arch"].update(name="gpt5"))
    with pytest.raises(LineageError, match="unknown architecture 'gpt5'"):
        models.load(p)


def test_wrong_meta_types(tmp_path):
    p, _ = save_small(tmp_path)
    _rewrite_meta(p, lambda meta, h: meta.update(seed="zero"))
    with pytest.raises(LineageError, match="'seed' has type str"):
        models.load(p)


def test_tampered_tensor_fails_checksum(tmp_path):
    p, _ = save_small(tmp_path)
    raw = bytearray(p.read_bytes())
    raw[-3] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(LineageError, match="checksum"):
        models.load(p)


def test_nan_weights_refused(tmp_path):
    m = models.build("mlp", 3, 1, 4, hidden=[5])
    with torch.no_grad():
        m.head.weight[0, 0] = float("nan")
    with pytest.raises(LineageError, match="refusing to save nan.safetensors: .*NaN or Inf"):
        models.save(m, tmp_path / "nan.safetensors", {"id": "n"})
    assert not (tmp_path / "nan.safetensors").exists()
    p = models.save(m, tmp_path / "nan.safetensors", {"id": "n"}, allow_nonfinite=True)
    with pytest.raises(LineageError, match="NaN or Inf"):
        models.load(p)
    assert torch.isnan(models.load(p, allow_nonfinite=True)[0].head.weight).any()


def test_missing_file():
    with pytest.raises(LineageError, match="not found"):
        models.load("/nonexistent/model.safetensors")


def test_safetensors_without_lineage_metadata(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2, 2)}, str(p))
    with pytest.raises(LineageError, match=r"other.safetensors: .*no lineage metadata"):
        models.load(p)
    save_file({"w": torch.zeros(2, 2)}, str(p), metadata={"author": "someone else"})
    with pytest.raises(LineageError, match="no lineage metadata"):
        models.load(p)


def test_lineage_metadata_not_json_or_without_arch(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "odd.safetensors"
    save_file({"w": torch.zeros(2)}, str(p), metadata={"lineage": "{not json"})
    with pytest.raises(LineageError, match="odd.safetensors: .*lineage metadata is not JSON"):
        models.load(p)
    meta = json.dumps({"format": models.io.FORMAT, "id": "x"})
    save_file({"w": torch.zeros(2)}, str(p), metadata={"lineage": meta})
    with pytest.raises(LineageError, match="'arch' is missing or has wrong types"):
        models.load(p)
    save_file({"w": torch.zeros(2)}, str(p), metadata={"lineage": json.dumps({"id": "x"})})
    with pytest.raises(LineageError, match="metadata format is not"):
        models.load(p)
