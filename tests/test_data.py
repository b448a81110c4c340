import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from lineage.data import build_datamodule
from lineage.data.cifar10 import read_batch
from lineage.data.mnist import read_idx
from lineage.errors import LineageError


def idx_bytes(arr: np.ndarray) -> bytes:
    magic = 0x00000800 | arr.ndim
    return (
        struct.pack(">I", magic)
        + b"".join(struct.pack(">I", d) for d in arr.shape)
        + arr.astype(np.uint8).tobytes()
    )


def write_mnist(root, n_train=20, n_test=10, gz=True):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, arr in files.items():
        blob = idx_bytes(np.asarray(arr))
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (raw / name).write_bytes(blob)
    return files


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_round_trip(tmp_path, gz):
    files = write_mnist(tmp_path, gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    arr = read_idx(tmp_path / "MNIST" / "raw" / name)
    assert arr.shape == (20, 28, 28)
    assert np.array_equal(arr, files["train-images-idx3-ubyte"])


def test_mnist_datamodule_from_idx_files(tmp_path):
    write_mnist(tmp_path)
    dm = build_datamodule("mnist", root=tmp_path, val_fraction=0.1)
    assert dm.input_shape == (1, 28, 28)
    assert len(dm.train) + len(dm.val) == 20 and len(dm.test) == 10
    assert 0.0 <= float(dm.train.x.min()) and float(dm.train.x.max()) <= 1.0


def test_idx_bad_magic(tmp_path):
    p = tmp_path / "bad-idx"
    p.write_bytes(b"\x00\x00\x09\x03" + b"\x00" * 20)
    with pytest.raises(LineageError, match="magic"):
        read_idx(p)


def test_idx_wrong_length(tmp_path):
    p = tmp_path / "short-idx"
    p.write_bytes(idx_bytes(np.zeros((5, 4, 4)))[:-7])
    with pytest.raises(LineageError, match="corrupt IDX"):
        read_idx(p)


def test_idx_bad_gzip(tmp_path):
    p = tmp_path / "x-idx3-ubyte.gz"
    p.write_bytes(b"not gzip at all")
    with pytest.raises(LineageError, match="cannot read"):
        read_idx(p)


def test_mnist_missing_names_path(tmp_path):
    with pytest.raises(LineageError, match=str(tmp_path / "MNIST" / "raw")):
        build_datamodule("mnist", root=tmp_path)


def test_mnist_download_offline_path(tmp_path, monkeypatch):
    """data.download=true with no network: a clear error, and nothing half-written."""
    import urllib.request

    def no_net(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_net)
    with pytest.raises(LineageError, match="could not download"):
        build_datamodule("mnist", root=tmp_path, download=True)
    assert not any((tmp_path / "MNIST" / "raw").glob("*.gz"))


def test_mnist_download_writes_files(tmp_path, monkeypatch):
    """The download path, served from local bytes: it writes the files the reader reads."""
    import io
    import urllib.request

    src = tmp_path / "src"
    write_mnist(src)

    def fake_urlopen(url, timeout=None):
        name = url.rsplit("/", 1)[1]
        return io.BytesIO((src / "MNIST" / "raw" / name).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    dm = build_datamodule("mnist", root=tmp_path / "dst", download=True)
    assert len(dm.test) == 10


def write_cifar(root, n=4):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [i % 10 for i in range(n)],
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    return d


def test_cifar_reader(tmp_path):
    write_cifar(tmp_path)
    dm = build_datamodule("cifar10", root=tmp_path, val_fraction=0.1)
    assert dm.input_shape == (3, 32, 32)
    assert len(dm.test) == 4 and len(dm.train) + len(dm.val) == 20


def test_cifar_corrupt_length(tmp_path):
    d = write_cifar(tmp_path)
    (d / "test_batch").write_bytes(
        pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, protocol=2)
    )
    with pytest.raises(LineageError, match="corrupt CIFAR-10"):
        build_datamodule("cifar10", root=tmp_path)


def test_cifar_refuses_code_in_pickle(tmp_path):
    """A batch file that would call os.system when unpickled is refused, not executed."""
    d = write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (d / "data_batch_1").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(LineageError, match="refusing to load global"):
        read_batch(d / "data_batch_1")


def test_cifar_missing(tmp_path):
    with pytest.raises(LineageError, match="make_cifar10.py"):
        build_datamodule("cifar10", root=tmp_path)


def test_digits_classes_subset_relabelled():
    dm = build_datamodule("digits", classes=[5, 6, 7, 8, 9])
    assert dm.num_classes == 5
    for s in (dm.train, dm.val, dm.test):
        assert set(s.y.unique().tolist()) <= {0, 1, 2, 3, 4}
    full = build_datamodule("digits")
    # relabelled class 0 is digit 5: same images as digit 5 in the full test split
    assert torch.equal(dm.test.x, full.test.x[full.test.y >= 5])


def test_limit_and_fixed_split():
    a = build_datamodule("digits", limit=50)
    b = build_datamodule("digits", limit=50)
    assert len(a.train) == len(a.val) == len(a.test) == 50
    assert torch.equal(a.train.x, b.train.x)
    c = build_datamodule("digits", limit=50, split_seed=1)
    assert not torch.equal(a.train.x, c.train.x)


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"classes": [3, 3]}, "distinct"),
        ({"classes": [12]}, "distinct"),
        ({"limit": 0}, "positive"),
    ],
)
def test_bad_data_options(kw, msg):
    with pytest.raises(LineageError, match=msg):
        build_datamodule("digits", **kw)


def test_unknown_dataset_lists_valid():
    with pytest.raises(LineageError, match="cifar10, digits, mnist"):
        build_datamodule("imagenet")


@pytest.mark.parametrize(
    ("stem", "dims"),
    [
        ("train-images-idx3-ubyte", [8192, 256, 256]),  # 2**29 bytes: passed the old cap
        ("train-images-idx3-ubyte", [60001, 28, 28]),
        ("t10k-labels-idx1-ubyte", [10001]),
        ("t10k-images-idx3-ubyte", [10000, 28, 29]),
    ],
)
def test_an_mnist_file_declaring_more_than_mnist_is_refused_unread(tmp_path, stem, dims):
    """Issue 25, item 8: each MNIST file is bounded by MNIST's real shape, checked on the
    header, before the body is read or decompressed (here the body is not even there)."""
    files = write_mnist(tmp_path, gz=True)
    assert files
    head = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    (tmp_path / "MNIST" / "raw" / f"{stem}.gz").write_bytes(gzip.compress(head))
    with pytest.raises(LineageError, match=r"not an MNIST file: header declares .* than MNIST's"):
        build_datamodule("mnist", root=tmp_path)


def test_any_other_idx_file_has_a_documented_cap(tmp_path):
    from lineage.data.mnist import MAX_IDX_BYTES

    p = tmp_path / "other-idx3-ubyte.gz"
    p.write_bytes(
        gzip.compress(
            bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in [8192, 256, 256])
        )
    )
    assert 8192 * 256 * 256 > MAX_IDX_BYTES >= 60000 * 28 * 28
    with pytest.raises(LineageError, match="more than an IDX file may hold here"):
        read_idx(p)
