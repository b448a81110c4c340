from . import lenet, mlp, resnet, vgg  # noqa: F401  (registers the architectures)
from .io import load, save
from .registry import MODELS, arch_of, build, register

__all__ = ["MODELS", "arch_of", "build", "load", "register", "save"]
