"""Names for the types of cumel's public signatures.

cumel's entry points take NumPy arrays, CuPy arrays and torch tensors (and array-likes where
they say so) and give back the kind they were given, so an array in a signature is ``Array``:
any of them, to a type checker.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Union

Array = Any
"""A ``numpy.ndarray``, a ``cupy.ndarray`` or a ``torch.Tensor`` (a result: the input's kind)."""

ArrayModule = ModuleType
"""``numpy`` or ``cupy``: the array module a function computes with."""

Progress = Union[bool, str, Callable[[int], Any]]
"""``progress=``: True, False, "auto", or a callable told the work done since its last call."""

__all__ = ["Array", "ArrayModule", "Progress"]
