"""Model files of every form an auditor is handed, loaded without running their code.

| form | how | the architecture from |
|---|---|---|
| lineage's own `.safetensors` | `io.load` (bounded header, checksum, record) | its record * |
| a plain `.safetensors` state dict | `safetensors` | `arch=` (required) |
| a PyTorch `.pt` / `.pth` / `.bin` state dict | `torch.load(weights_only=True)` | `arch=` |
| a Hugging Face folder (config.json + model.safetensors) | transformers, offline | its config |

`arch` is what the user says built the model: `module.path:factory` (called with no
arguments, or with `kwargs`) or a YAML file holding a Hydra `_target_` and its keyword
arguments. A file never names code to import: a pickle that needs more than tensors is
refused, naming the file, and nothing in it runs. (*) A lineage file of a model the user's
own code built (a `_target_` run) is loaded with `arch=` naming that code; the file's record
still gives the task and the plain arguments (`user_architecture`).
"""

from __future__ import annotations

import hashlib
import inspect
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters import Logits
from ..errors import LineageError
from ..text import shorten
from ..utils import read_yaml
from . import io
from .registry import build_target, call_factory, import_factory, input_shape_of

PICKLES = (".pt", ".pth", ".bin", ".ckpt")


def file_id(path: Path) -> str:
    """An id from the file's bytes (foreign files carry none of their own)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "f-" + h.hexdigest()[:12]


def arch_target(arch: str | Path) -> tuple[str, dict[str, Any]]:
    """The factory `arch` names and the keyword arguments its YAML gives (none for a path)."""
    spec = str(arch)
    if not spec.endswith((".yaml", ".yml")):
        return spec, {}
    conf = read_yaml(spec, "--arch")
    if not isinstance(conf, dict) or not isinstance(conf.get("_target_"), str):
        raise LineageError(f"--arch {spec}: needs a `_target_` (an importable factory)")
    target = str(conf.pop("_target_"))
    return target, {str(k): v for k, v in conf.items()}


def _plain(v: Any) -> bool:
    scalar = (int, float, str, bool)
    return isinstance(v, scalar) or (
        isinstance(v, list) and len(v) <= 64 and all(isinstance(i, scalar) for i in v)
    )


def user_architecture(arch: str | Path, record: Mapping[str, Any]) -> nn.Module:
    """The user's `arch` built for the task a lineage file records (its classes and input),
    with the file's recorded arguments where they are plain values that the factory's
    signature names: the user's command line picks the code, the file gives only numbers."""
    target, kwargs = arch_target(arch)
    fn = import_factory(target)
    try:
        names = set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        names = set()
    recorded = record.get("kwargs") or {}
    kw = {k: v for k, v in recorded.items() if k in names and _plain(v)}
    return build_target(
        target, int(record["num_classes"]), input_shape_of(record), **{**kw, **kwargs}
    )


def architecture(arch: str | Path, num_classes: int | None = None, shape: Any = None) -> nn.Module:
    """The model `arch` names, before its weights are loaded."""
    target, kwargs = arch_target(arch)
    fn = import_factory(target)
    if num_classes is None:
        try:
            model = fn(**kwargs)
        except TypeError as e:
            raise LineageError(f"--arch {target}: bad arguments {sorted(kwargs)} ({e})") from None
    else:
        model = call_factory(fn, target, num_classes, shape or (), kwargs)
    if not isinstance(model, nn.Module):
        raise LineageError(f"--arch {target} returned {type(model).__name__}, not an nn.Module")
    return model


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a safetensors or PyTorch file, never unpickling objects."""
    if path.suffix == ".safetensors":  # bounded header, tensors streamed (models.io)
        return io.read_state(io.read_header(path, what="safetensors file"))[0]
    try:
        with warnings.catch_warnings():  # torch warns about legacy formats: we answer anyway
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError:
        raise LineageError(
            f"{path.name}: refused: it holds Python objects that only a full unpickling "
            "could rebuild, and unpickling a stranger's file runs its code; save the "
            "weights alone (torch.save(model.state_dict()) or safetensors)"
        ) from None
    except Exception as e:  # noqa: BLE001  (zip, EOF and format errors of torch.load)
        raise LineageError(f"{path.name}: not a readable PyTorch file ({e})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]  # a training checkpoint's weights
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise LineageError(f"{path.name}: not a state dict (a mapping of names to tensors)")
    return dict(obj)


def hf_folder(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A Hugging Face classifier folder, offline, weights from safetensors only."""
    try:
        import transformers
    except ImportError:
        raise LineageError(
            f"{path}: a Hugging Face folder needs transformers: pip install 'lineage[hf]'"
        ) from None
    transformers.logging.set_verbosity_error()  # no weight-loading bars in an audit's log
    transformers.utils.logging.disable_progress_bar()
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise LineageError(f"{path}: unreadable config.json ({str(e).splitlines()[0]})") from None
    names = " ".join(getattr(config, "architectures", None) or [])
    auto = (
        transformers.AutoModelForSequenceClassification
        if "SequenceClassification" in names
        else transformers.AutoModelForImageClassification
    )
    try:
        model = auto.from_pretrained(
            str(path), config=config, local_files_only=True, use_safetensors=True
        )
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise LineageError(f"{path}: cannot load the Hugging Face model ({first})") from None
    n = int(getattr(config, "num_labels", 0) or 0)
    meta: dict[str, Any] = {"id": file_id(path / "model.safetensors"), "format": "huggingface"}
    meta["source"] = str(path)
    meta["arch"] = {"name": type(model).__name__, "num_classes": n, "hf": config.to_dict()}
    return Logits(model).eval(), meta


def load_model(
    path: str | Path,
    arch: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Any model file (see the module docstring) -> (model in eval mode, metadata)."""
    path = Path(path)
    try:
        path.stat()
    except FileNotFoundError:
        raise LineageError(f"model file not found: {shorten(path)}") from None
    except OSError as e:  # a name too long, a loop of links, no permission
        raise LineageError(f"cannot read model file {shorten(path)}: {e.strerror}") from None
    if path.is_dir():
        if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
            model, meta = hf_folder(path)
            return model.to(device), meta
        raise LineageError(f"{path}: a folder must hold config.json and model.safetensors")
    if not path.is_file():
        raise LineageError(f"model file not found: {path}")
    if (
        path.suffix == ".safetensors"
        and "lineage" in io.read_header(path, what="safetensors file").metadata
    ):
        if arch is None:
            return io.load(path, device)
        record = io.read_meta(path)["arch"]
        return io.load(path, device, builder=lambda: user_architecture(arch, record))
    if path.suffix not in (".safetensors", *PICKLES):
        raise LineageError(
            f"{path.name}: unknown model file type {path.suffix!r}; lineage reads .safetensors, "
            f"{', '.join(PICKLES)} state dicts and Hugging Face folders"
        )
    if arch is None:
        raise LineageError(
            f"{path.name} is a plain state dict: say what builds it with --arch "
            "module.path:factory or --arch model.yaml (a Hydra _target_ with its arguments)"
        )
    state = state_dict_of(path)
    model = architecture(arch)
    io.fit_state(model, state, path.name)
    info: dict[str, Any] = {"id": file_id(path), "format": "state_dict", "source": path.name}
    info["arch"] = {"target": str(arch)}
    return model.to(device).eval(), info
