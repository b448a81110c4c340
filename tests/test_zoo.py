import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import HANG_S

from lineage import models
from lineage.errors import LineageError
from lineage.training import accuracy, train_classifier
from lineage.zoo import Zoo


def test_same_config_same_model_other_seed_other_model(tmp_path, digits_dm, fast_train):
    zoo = Zoo(tmp_path)
    calls = []

    def trainer(seed):
        def train():
            calls.append(seed)
            torch.manual_seed(seed)
            m = models.build("mlp", 10, 1, 8, hidden=[32])
            m, acc = train_classifier(m, digits_dm, fast_train, seed)
            return m, {"accuracy": acc, "seed": seed}

        return train

    spec = {"model": "mlp", "seed": 0}
    a, meta_a, trained_a = zoo.get_or_train(spec, trainer(0), "parent")
    b, meta_b, trained_b = zoo.get_or_train(spec, trainer(0), "parent")
    assert trained_a and not trained_b and calls == [0]
    assert meta_a["id"] == meta_b["id"]
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    c, meta_c, trained_c = zoo.get_or_train({**spec, "seed": 1}, trainer(1), "parent")
    assert trained_c and meta_c["id"] != meta_a["id"]
    assert not torch.equal(a.head.weight, c.head.weight)
    assert accuracy(b, digits_dm.test.x, digits_dm.test.y) == meta_a["accuracy"]
    assert [r["id"] for r in zoo.trained()] == [meta_a["id"], meta_c["id"]]


def test_corrupt_cached_model_is_retrained(tmp_path):
    zoo = Zoo(tmp_path)
    spec = {"k": 1}

    def train():
        return models.build("mlp", 3, 1, 4, hidden=[4]), {}

    _, meta, _ = zoo.get_or_train(spec, train, "parent")
    path = zoo.path(meta["id"])
    path.write_bytes(path.read_bytes()[:-4])
    _, _, trained = zoo.get_or_train(spec, train, "parent")
    assert trained and path.with_suffix(".corrupt").exists()
    models.load(path)  # the rebuilt file verifies


WORKER = textwrap.dedent("""
    import json, sys, time
    import torch
    from lineage import models
    from lineage.data import build_datamodule
    from lineage.training import train_classifier
    from lineage.zoo import Zoo

    dm = build_datamodule("digits", limit=200)
    def train():
        torch.manual_seed(0)
        m = models.build("mlp", 10, 1, 8, hidden=[16])
        time.sleep(1.0)  # widen the race window
        m, acc = train_classifier(m, dm, {"epochs": 1, "lr": 1e-3, "accelerator": "cpu"}, 0)
        return m, {"accuracy": acc}
    model, meta, trained = Zoo(sys.argv[1]).get_or_train({"race": 1}, train, "parent")
    print(json.dumps({"id": meta["id"], "trained": trained}))
""")


def test_two_processes_train_once(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [json.loads(p.communicate(timeout=HANG_S)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0]["id"] == outs[1]["id"]
    assert sorted(o["trained"] for o in outs) == [False, True]
    assert len(Zoo(tmp_path).trained()) == 1
    assert not list((tmp_path / "models").glob("*.tmp"))


@pytest.mark.parametrize("name", ["locks/lineage.lock", "models/m-abc.safetensors"])
def test_a_symlink_in_the_zoo_is_refused_up_front(tmp_path, name):
    """A lock that is a link failed with ELOOP only after the training (issue 25, item 10);
    a model file that is a link would be read or replaced where it points."""
    Zoo(tmp_path / "zoo")
    target = tmp_path / "elsewhere"
    target.write_text("x")
    (tmp_path / "zoo" / name).symlink_to(target)
    with pytest.raises(LineageError, match="is a symbolic link"):
        Zoo(tmp_path / "zoo")


def test_a_symlink_made_after_the_zoo_opened_is_refused_before_use(tmp_path):
    zoo = Zoo(tmp_path / "zoo")
    (tmp_path / "zoo" / "locks" / "lineage.lock").symlink_to(tmp_path / "loop")
    model = models.build("mlp", 3, 1, [4], hidden=[4])
    with pytest.raises(LineageError, match="lineage.lock is a symbolic link"):
        zoo.save_derived(model, {"id": "m-x"})
    assert not (tmp_path / "zoo" / "models" / "m-x.safetensors").exists()


# Model ids of default configs, computed before the train group gained label_smoothing and
# augment_noise: a key added to the train group must leave every stored model's id alone.
DEFAULT_IDS = {
    (): ("m-38aeba4c51d4", "m-a6cfea043c26"),
    ("experiment=smoke",): ("m-4fc14a83968e", "m-87a86c4165b0"),
    ("experiment=mnist_lenet",): ("m-209703611b7d", "m-31e487833c33"),
    ("train.optimizer=sgd",): ("m-0c8acff33f4f", "m-1a9277c639c2"),
}


@pytest.mark.parametrize("overrides", list(DEFAULT_IDS))
def test_later_train_keys_at_their_default_keep_model_ids(overrides):
    from lineage.config import compose
    from lineage.zoo import spec

    cfg = compose(["logger=none", *overrides])
    ids = (Zoo.model_id(spec(cfg, 0)), Zoo.model_id(spec(cfg, 3, half=1)))
    assert ids == DEFAULT_IDS[overrides]
    for key in ("label_smoothing", "augment_noise"):
        other = compose(["logger=none", *overrides, f"train.{key}=0.1"])
        assert Zoo.model_id(spec(other, 0)) != ids[0]  # another recipe, another model


def test_later_train_keys_at_their_default_keep_finished_jobs_finished():
    from lineage.config import compose
    from lineage.pipeline import config_hash
    from lineage.zoo import LATER_TRAIN_KEYS

    cfg = compose(["logger=none"])
    before = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k not in LATER_TRAIN_KEYS}}
    assert config_hash(cfg) == config_hash(before)  # a job's metrics.json from before
    smooth = compose(["logger=none", "train.label_smoothing=0.1"])
    assert config_hash(smooth) != config_hash(cfg)


def test_later_train_keys_are_the_train_groups_defaults():
    from dataclasses import asdict

    from lineage.training import TrainConf
    from lineage.zoo import LATER_TRAIN_KEYS

    assert {k: asdict(TrainConf())[k] for k in LATER_TRAIN_KEYS} == LATER_TRAIN_KEYS


def test_label_smoothing_and_input_noise_reach_the_training_step():
    import torch.nn.functional as F
    from torch import nn

    from lineage.training import Classifier

    seen = []

    class Record(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            seen.append(x.clone())
            return self.lin(x)

    x, y = torch.zeros(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    plain = Classifier(Record(), {}, 3)
    loss = plain.training_step((x, y), 0)
    assert torch.equal(seen[-1], x)
    assert torch.isclose(loss, F.cross_entropy(plain(x), y))
    smooth = Classifier(Record(), {"label_smoothing": 0.1, "augment_noise": 0.5}, 3)
    torch.manual_seed(0)
    smooth.training_step((x, y), 0)
    noisy = seen[-1]
    logits = smooth(x)
    assert 0.3 < float(noisy.std()) < 0.7  # N(0, 0.5^2) noise on zero inputs
    expected = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert torch.isclose(smooth.loss(logits, x, y), expected)
    assert not torch.isclose(expected, F.cross_entropy(logits, y))
