"""No file handed to any command imports or calls anything it names (issue 25, item 1).

A model file records its architecture; before, a record naming `lineage.<anything>` as
its `arch.target` had that function imported and called with the file's `arch.kwargs`
(`lineage.utils.atomic_write` wrote any file). Here every public callable of the package
is named, in turn, by a crafted file; each is replaced by a recorder (functions) or has
its `__init__` recorded (classes), and every loader of a lineage file must refuse the
file with a LineageError while no recorder sees the file's arguments."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import pkgutil
import sys
from pathlib import Path
from typing import Any

import pytest

import lineage
from lineage import models
from lineage.errors import LineageError
from lineage.models.io import FORMAT, checksum

CANARY = "canary-9f3b1c"  # the crafted files' only argument: a call carrying it is a breach


def _public_callables() -> dict[str, list[tuple[Any, str]]]:
    """dotted path -> (module, attribute) of every public function and class reachable as
    an attribute of a lineage module (its own, and what it imports)."""
    found: dict[str, list[tuple[Any, str]]] = {}
    names = [m.name for m in pkgutil.walk_packages(lineage.__path__, "lineage.")]
    for name in ["lineage", *names]:
        if name.endswith("__main__"):
            continue  # running it is the command itself
        try:
            mod = importlib.import_module(name)
        except Exception:  # noqa: BLE001  (an optional extra that is not installed)
            continue
        for attr, obj in vars(mod).items():
            if attr.startswith("_") or not callable(obj):
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            found.setdefault(f"{name}.{attr}", []).append((mod, attr))
    return found


TARGETS = _public_callables()


class Calls:
    """The calls that carried the file's argument, and imports of the module it named."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.module = ""  # the module the current crafted file names

    def note(self, what: str, a: tuple, k: dict) -> None:
        if CANARY in a or CANARY in k.values():
            self.seen.append(f"{what} {a!r} {k!r}")


def _recorder(calls: Calls, path: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def record(*a: Any, **k: Any) -> Any:
        calls.note(path, a, k)
        return fn(*a, **k)

    return record


def _record_init(calls: Calls, cls: type, mp: pytest.MonkeyPatch) -> None:
    orig = cls.__init__

    def init(self: Any, *a: Any, **k: Any) -> None:
        calls.note(f"{cls.__module__}.{cls.__qualname__}", a, k)
        if orig is object.__init__:
            return None
        return orig(self, *a, **k)

    try:
        mp.setattr(cls, "__init__", init)
    except (TypeError, AttributeError):  # a builtin or frozen class: its name is still a
        pass  # target below, and import_module is watched too


@pytest.fixture
def recorded():
    calls = Calls()
    with pytest.MonkeyPatch.context() as mp:
        classes: set[type] = set()
        for path, places in TARGETS.items():
            for mod, attr in places:
                obj = getattr(mod, attr)
                if inspect.isclass(obj):
                    if obj.__module__.startswith("lineage") and not issubclass(obj, BaseException):
                        classes.add(obj)
                else:
                    mp.setattr(mod, attr, _recorder(calls, path, obj))
        for cls in classes:
            _record_init(calls, cls, mp)
        real_import = importlib.import_module

        def watched(name: str, package: str | None = None) -> Any:
            if name == calls.module:
                calls.seen.append(f"import_module({name!r})")
            return real_import(name, package)

        mp.setattr(importlib, "import_module", watched)
        yield calls


def _crafter(folder: Path) -> Any:
    """target -> a lineage file whose record names `target`, called with the canary."""
    from safetensors.torch import save

    m = models.build("mlp", 3, 1, [4], hidden=[4])
    state = {k: v.contiguous() for k, v in m.state_dict().items()}
    digest = checksum(state)

    def craft(target: str, **meta: Any) -> Path:
        arch = {**m.arch, "target": target, "kwargs": {"canary": CANARY}}  # type: ignore[dict-item]
        info = {"id": "x", "created": "now", "git_sha": "x", **meta, "arch": arch}
        info["format"] = FORMAT
        blob = save(state, metadata={"lineage": json.dumps(info), "checksum": digest})
        path = folder / "crafted.safetensors"
        path.write_bytes(blob)
        return path

    return craft


def _loaders(tmp: Path, good: Path) -> dict[str, Any]:
    from lineage.cli import main
    from lineage.models.files import load_model
    from lineage.remote.server import served_from_file
    from lineage.zoo import Zoo

    def zoo_cache(path: Path) -> None:
        zoo = Zoo(tmp / "zoo")
        spec = {"k": 1}
        zoo.path(zoo.model_id(spec)).write_bytes(path.read_bytes())
        trained = models.build("mlp", 3, 1, [4], hidden=[4])
        # the cached file is refused (set aside); the model is trained anew
        _, _, new = zoo.get_or_train(spec, lambda: (trained, {}), "independent")
        if new:
            raise LineageError("refused")

    def cli(*args: str) -> None:
        if main(["compare", *args]) == 2:
            raise LineageError("refused")

    return {
        "lineage.load_model": lambda p: lineage.load_model(p),
        "files.load_model": lambda p: load_model(p),
        "models.load (report's decision planes)": lambda p: models.load(p),
        "serve": lambda p: served_from_file(p),
        "compare parent": lambda p: cli(str(p), str(good)),
        "compare suspect": lambda p: cli(str(good), str(p)),
        "zoo cache": zoo_cache,
    }


def test_every_public_callable_named_by_a_file_is_refused_before_any_call(
    tmp_path, recorded, capsys, monkeypatch
):
    assert len(TARGETS) > 300  # the walk found the package
    monkeypatch.setattr("lineage.models.io.git_sha", lambda: "x")  # the zoo saves, often
    good = models.save(models.build("mlp", 3, 1, [4], hidden=[4]), tmp_path / "good.safetensors")
    loaders = _loaders(tmp_path, good)
    craft = _crafter(tmp_path)
    for i, path in enumerate(sorted(TARGETS)):
        mod, _, attr = path.rpartition(".")
        for spelling in (path, f"{mod}:{attr}") if i % 7 == 0 else (path,):
            crafted = craft(spelling)
            recorded.module = mod
            # the slower loaders (a CLI parse, a zoo that then trains) see every 4th target;
            # all of them go through the same record check as the others
            for name, load in loaders.items() if i % 4 == 0 else list(loaders.items())[:4]:
                recorded.seen.clear()
                with pytest.raises(LineageError):
                    load(crafted)
                breach = recorded.seen
                assert not breach, f"{name} called what {spelling!r} named: {breach[0][:200]}"
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "never imports or calls what a file names" in err


def test_a_registered_name_still_loads_and_bad_options_are_refused(tmp_path):
    m = models.build("mlp", 3, 1, [4], hidden=[4])
    path = models.save(m, tmp_path / "ok.safetensors")
    loaded, _ = models.load(path)
    assert loaded.arch["name"] == "mlp"
    m.arch["kwargs"] = {"hidden": [4], "path": "/tmp/x"}  # type: ignore[index]
    bad = models.save(m, tmp_path / "bad.safetensors")
    with pytest.raises(LineageError, match="no option 'path'"):
        models.load(bad)


def test_a_registered_factory_given_as_target_is_recorded_by_its_name():
    m = models.build_target("lineage.models.mlp.mlp", 3, [4], hidden=[4])
    assert m.arch["name"] == "mlp" and "target" not in m.arch


def test_a_parent_file_naming_a_data_factory_is_refused_before_import(tmp_path, capsys):
    """The parent's training recipe (`spec.data._target_`) is a file's word too."""
    from lineage.cli import main

    m = models.build("mlp", 10, 1, [8, 8], hidden=[4])
    spec = {"data": {"name": "digits", "_target_": "this.x"}, "train": {}}
    meta = {"data": {"name": "digits"}, "spec": spec, "seed": 0}
    parent = models.save(m, tmp_path / "p.safetensors", meta)
    assert main(["compare", str(parent), str(parent), "--zoo", str(tmp_path / "zoo")]) == 2
    assert "this" not in sys.modules
    assert "never imports" in capsys.readouterr().err
