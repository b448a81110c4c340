from . import hf, lenet, mlp, resnet, vgg  # noqa: F401  (registers the architectures)
from .io import load, save
from .registry import (
    MODELS,
    arch_of,
    build,
    build_target,
    from_config,
    input_shape_of,
    rebuild,
    register,
    scale_widths,
)

__all__ = [
    "MODELS",
    "arch_of",
    "build",
    "build_target",
    "from_config",
    "input_shape_of",
    "load",
    "rebuild",
    "register",
    "save",
    "scale_widths",
]
