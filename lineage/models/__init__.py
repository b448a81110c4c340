from . import lenet, mlp, resnet, vgg  # noqa: F401  (registers the architectures)
from .io import load, save
from .registry import MODELS, arch_of, build, head_of, register, scale_widths

__all__ = ["MODELS", "arch_of", "build", "head_of", "load", "register", "save", "scale_widths"]
