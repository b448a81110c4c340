"""lineage: is model B derived from model A, and how far was it modified?"""

from .errors import LineageError

__all__ = ["LineageError"]
