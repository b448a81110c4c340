"""quantize: weights to `bits`-bit integers, symmetric, one scale per output channel,
stored dequantized (integer x scale), which is exactly what a deployed int-k model
computes with. No training.

bits = 8 - round(6 * ratio) (8 bits at ratio 0 .. 2 bits at ratio 1) unless `bits` is
given. Quantized tensors: the weights of the Linear/Conv layers, head included; biases
and BatchNorm stay float (int-k deployments keep them in higher precision too).
Per channel: scale = max|w| / (2^(bits-1) - 1), q = clamp(round(w / scale)), so each
output channel holds at most 2^bits - 1 distinct values.

`backend: dynamic_int8` also builds a real `torch.ao.quantization.quantize_dynamic` model
(CPU only) in `Derived.blackbox`: its Linear layers run int8 kernels on exactly the same
integers and scales (a k-bit integer fits an int8), activations are quantized on the fly;
Conv layers have no dynamic int8 kernel and stay float. `Derived.model` is its float twin,
holding the dequantized weights, for weight-space tests.

Effect keys (metrics.json derived.<key>):

| key                   | meaning                                                     |
|-----------------------|-------------------------------------------------------------|
| bits                  | bit width k                                                 |
| levels_max            | most distinct values in any output channel (<= 2^k - 1)    |
| relative_change       | quantization error ||W_q - W|| / ||W|| over all parameters |
| blackbox_layers       | Linear layers running int8 kernels (dynamic_int8 only)      |
| blackbox_agreement    | top-1 agreement of black box and float twin on test inputs |
| blackbox_max_abs_diff | max |logit difference| black box vs float twin on test     |
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..data import DataModule
from ..errors import LineageError
from ..settings import knob
from ..training import predict
from .common import copy_parent, param_layers, relative_change
from .registry import Derived, register


@dataclass
class QuantizeConf:
    name: str = "quantize"
    bits: int | None = knob(None, lo=2, hi=16)  # null: 8 - round(6 * ratio)
    # none: float tensors on the quantization grid | dynamic_int8: also torch's real int8
    # model, queried as the black-box suspect
    backend: str = knob("none", choices=("none", "dynamic_int8"))

    def check_ratio(self, ratio: float) -> None:
        if self.backend == "dynamic_int8" and bits_for(asdict(self), ratio) > 8:
            raise LineageError(
                f"quantize: backend=dynamic_int8 stores int8, so bits must be <= 8 "
                f"(got {bits_for(asdict(self), ratio)})"
            )


def bits_for(opts: Mapping[str, Any], ratio: float) -> int:
    return int(opts["bits"]) if opts.get("bits") is not None else 8 - int(6 * ratio + 0.5)


def quantize_weight(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel quantization: (integers, scales), w ~ ints * scale."""
    qmax = 2 ** (bits - 1) - 1
    amax = w.detach().abs().flatten(1).amax(1)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    shape = (-1,) + (1,) * (w.dim() - 1)
    ints = torch.clamp(torch.round(w.detach() / scale.view(shape)), -qmax, qmax)
    return ints, scale


def levels_max(model: nn.Module) -> int:
    return max(
        int(len(torch.unique(row)))
        for _, m in param_layers(model)
        for row in m.weight.detach().flatten(1)
    )


def _dynamic_int8(
    model: nn.Module, ints: dict[str, torch.Tensor], scales: dict[str, torch.Tensor]
) -> tuple[nn.Module, int]:
    """torch's real dynamic-int8 model, its packed weights set to our integers/scales;
    also how many layers run int8 kernels."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            qmodel = quantize_dynamic(
                copy_parent(model), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
            )
            packed = [
                (n, m)
                for n, m in qmodel.named_modules()
                if n in ints and hasattr(m, "set_weight_bias")
            ]
            for name, m in packed:
                qw = torch.quantize_per_channel(
                    ints[name] * scales[name].view(-1, 1),
                    scales[name].double(),
                    torch.zeros(len(scales[name]), dtype=torch.long),
                    0,
                    torch.qint8,
                )
                m.set_weight_bias(qw, m.bias())
    except (ImportError, AttributeError, RuntimeError) as e:
        raise LineageError(
            "quantize: backend=dynamic_int8 needs torch.ao.quantization."
            f"quantize_dynamic, which this torch build cannot run ({e}); "
            "use backend=none"
        ) from None
    return qmodel.eval(), len(packed)


@register("quantize", QuantizeConf)
def quantize(
    parent: nn.Module,
    dm: DataModule,
    cfg: Mapping[str, Any],
    ratio: float,
    seed: int,
    logger: Any = None,
    train: Mapping[str, Any] | None = None,
) -> Derived:
    bits = bits_for(cfg, ratio)
    model = copy_parent(parent).eval()
    ints, scales = {}, {}
    with torch.no_grad():
        for name, m in param_layers(model):
            ints[name], scales[name] = quantize_weight(m.weight, bits)
            shape = (-1,) + (1,) * (m.weight.dim() - 1)
            m.weight.copy_(ints[name] * scales[name].view(shape))
    effect: dict[str, Any] = {
        "bits": bits,
        "levels_max": levels_max(model),
        "relative_change": relative_change(parent, model),
    }
    blackbox = None
    if cfg["backend"] == "dynamic_int8":
        blackbox, n_int8 = _dynamic_int8(model, ints, scales)
        with torch.no_grad():  # a fully int8 model may hold no nn.Parameter to find a device
            out = torch.cat([blackbox(x) for x in dm.test.x.split(1024)])
        ref = predict(model, dm.test.x)
        effect.update(
            blackbox_layers=n_int8,
            blackbox_agreement=float((out.argmax(1) == ref.argmax(1)).float().mean()),
            blackbox_max_abs_diff=float((out - ref).abs().max()),
        )
    return Derived(model, effect, blackbox=blackbox)
