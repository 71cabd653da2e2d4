"""Read NVIDIA's network pickles (StyleGAN2-ADA / StyleGAN3 ``.pkl``, and StyleGAN-XL's, written with ``dill``) as data,
without running code from the file.

A network pickle is ``pickle.dump(dict(G=..., D=..., G_ema=..., ...))`` where every network is a
``torch_utils.persistence`` object: unpickling calls ``_reconstruct_persistent_obj(meta)``, which normally executes
the Python source stored in ``meta["module_src"]`` to define the class, then restores the module's ``__dict__``
(``meta["state"]``). `load_network_pickle` instead uses an unpickler whose ``find_class`` knows only the globals such
files need, each mapped to a data-only stand-in:

- ``torch_utils.persistence._reconstruct_persistent_obj`` -> a `PersistentObject` holding ``meta`` (the embedded
  source is kept as text and never executed);
- ``dnnlib.util.EasyDict`` -> ``dict``; ``collections.OrderedDict`` -> itself;
- ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` -> a plain tensor view of the storage (bounds checked
  by torch, backward hooks refused);
- ``torch.storage._load_from_bytes`` -> ``torch.load(bytes, weights_only=True)``;
- numpy's ``dtype``, ``ndarray``, ``core.multiarray.scalar`` and ``core.multiarray._reconstruct`` (also under the
  numpy 2 name ``numpy._core``), which rebuild arrays and scalars from bytes;
- StyleGAN-XL (saved with ``dill``): ``dill._dill._create_array(reconstruct, args, state, npdict)``, dill's wrapper of
  every numpy array, -> the same numeric array (its ``reconstruct`` must itself be the allowed numpy one), and
  ``torch.nn.modules.sparse.Embedding``, the mapping network's class embedding (a plain torch module, not a
  persistent one) -> a `TorchModuleRecord` holding its ``__dict__``.

Any other global (``os.system``, ``builtins.eval``, a class of the source code, ...) raises `UnsafePickleError` naming
it, before anything from the file runs.
"""

import collections
import io
import os
import pickle
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import torch


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for a global that is not on the allow-list of network pickles."""


class ModuleRecord:
    """A pickled torch module as data: its class name and ``state`` (the module's ``__dict__``: ``_parameters``,
    ``_buffers``, ``_modules`` (children, themselves `ModuleRecord`s) and plain attributes)."""

    class_name: str
    state: dict

    def attribute(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)

    @property
    def children(self) -> dict[str, "ModuleRecord"]:
        return dict(self.state.get("_modules") or {})

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter and (non-``None``) buffer of this module and its children, keyed like ``state_dict()``."""
        tensors = {}
        for kind in ("_parameters", "_buffers"):
            for name, tensor in (self.state.get(kind) or {}).items():
                if tensor is not None:
                    tensors[name] = tensor
        for child_name, child in self.children.items():
            if child is None:
                continue
            if not isinstance(child, ModuleRecord):
                raise UnsafePickleError(
                    f"Submodule {child_name!r} of {self.class_name} is a {type(child).__name__}, not a network "
                    "module; this is not a StyleGAN2-ADA / StyleGAN3 / StyleGAN-XL network pickle."
                )
            tensors.update({f"{child_name}.{key}": tensor for key, tensor in child.tensors().items()})
        return tensors


@dataclass(frozen=True)
class PersistentObject(ModuleRecord):
    """A ``torch_utils.persistence`` object as data: what ``_reconstruct_persistent_obj`` receives.

    Attributes:
        class_name: Name of the class in the embedded source (e.g. ``"Generator"``, ``"SynthesisLayer"``).
        module_src: The embedded Python source, as text. Never executed.
        version: Format version of the persistence record (6 for StyleGAN2-ADA / StyleGAN3 pickles).
        state: The module's ``__dict__``: ``_parameters``, ``_buffers``, ``_modules``, ``_init_args``,
            ``_init_kwargs`` and plain attributes.
    """

    class_name: str
    module_src: str
    version: int
    state: dict


class TorchModuleRecord(ModuleRecord):
    """A plain ``torch.nn`` module pickled by reference to its class (StyleGAN-XL's ``mapping.embed``, an
    ``nn.Embedding``), as data. The pickle creates it empty (no constructor arguments) and then hands it the module's
    ``__dict__``; nothing of torch's class runs."""

    class_name = "Embedding"

    def __new__(cls, *args):
        if args:
            raise UnsafePickleError(
                f"A pickled torch.nn.{cls.class_name} takes no constructor arguments, got {args!r}."
            )
        record = super().__new__(cls)
        record.state = {}
        return record

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise UnsafePickleError(
                f"The state of a torch.nn.{self.class_name} is a {type(state).__name__}, not a dict."
            )
        self.state = state


def _persistent_object(meta: dict) -> PersistentObject:
    required = ("type", "version", "module_src", "class_name", "state")
    if not isinstance(meta, dict) or any(key not in meta for key in required):
        found = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise UnsafePickleError(f"A persistent object record must be a dict with {list(required)}; found {found}.")
    if meta["type"] != "class":
        raise UnsafePickleError(f"Only persistent classes are supported, got a record of type {meta['type']!r}.")
    if not isinstance(meta["state"], dict):
        raise UnsafePickleError(
            f"The state of persistent {meta['class_name']!r} is a {type(meta['state']).__name__}, not a dict."
        )
    return PersistentObject(str(meta["class_name"]), str(meta["module_src"]), int(meta["version"]), meta["state"])


def _load_storage(data: bytes):
    if not isinstance(data, bytes):
        raise UnsafePickleError(f"`torch.storage._load_from_bytes` expects bytes, got {type(data).__name__}.")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.TypedStorage):
        raise UnsafePickleError(f"A tensor must be rebuilt from a torch storage, got {type(storage).__name__}.")
    if backward_hooks:
        raise UnsafePickleError("The pickle attaches backward hooks to a tensor; network pickles have none.")
    tensor = torch.empty((0,), dtype=storage.dtype)
    # `set_` checks that the view fits in the storage. `_untyped_storage` is what torch's own rebuild uses (the public
    # `untyped()` warns that TypedStorage is deprecated).
    return tensor.set_(storage._untyped_storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError(f"A parameter must wrap a tensor, got {type(data).__name__}.")
    if backward_hooks:
        raise UnsafePickleError("The pickle attaches backward hooks to a parameter; network pickles have none.")
    return data


def _numpy_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"Only plain numpy arrays are supported, got subtype {subtype!r}.")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"Only numeric numpy scalars are supported, got dtype {dtype!r}.")
    if not isinstance(data, bytes):
        raise UnsafePickleError(f"A numpy scalar must be rebuilt from bytes, got {type(data).__name__}.")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _dill_create_array(reconstruct, args, state, npdict=None):
    # dill's `_create_array` calls `reconstruct(*args)` and then `__setstate__(state)`: allow it only for the numpy
    # reconstructor of this allow-list, on numeric data, with no instance dict.
    if reconstruct is not _numpy_reconstruct:
        raise UnsafePickleError(f"dill's array wrapper must rebuild a numpy array, got {reconstruct!r}.")
    if npdict:
        raise UnsafePickleError("dill's array wrapper carries an instance dict; plain numpy arrays have none.")
    dtype = state[2] if isinstance(state, tuple) and len(state) == 5 else None
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(state[4], bytes):
        raise UnsafePickleError("dill's array wrapper must hold a numeric numpy array state.")
    array = reconstruct(*args)
    array.__setstate__(state)
    return array


def _numpy_globals(module: str) -> dict[tuple[str, str], Any]:
    return {(module, "scalar"): _numpy_scalar, (module, "_reconstruct"): _numpy_reconstruct}


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_object,
    ("dnnlib.util", "EasyDict"): dict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    **_numpy_globals("numpy.core.multiarray"),
    **_numpy_globals("numpy._core.multiarray"),
    ("dill._dill", "_create_array"): _dill_create_array,
    ("torch.nn.modules.sparse", "Embedding"): TorchModuleRecord,
}


class NetworkPickleUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only `ALLOWED_GLOBALS` and refuses everything else."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)
            raise UnsafePickleError(
                f"Refusing to load `{module}.{name}`: the pickle asks for a global outside the allow-list of network "
                f"pickles, so it may run code. Nothing from it was executed. Allowed: {allowed}."
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"Refusing persistent id {pid!r}: network pickles have none.")


def load_network_pickle(file: str | os.PathLike | BinaryIO) -> dict:
    """Unpickle a network pickle as data.

    Args:
        file: Path or binary file object of the ``.pkl``.

    Returns:
        The pickled dict, e.g. ``{"G": ..., "D": ..., "G_ema": ..., "augment_pipe": None, ...}`` with every network a
        `PersistentObject` (and StyleGAN-XL's class embedding a `TorchModuleRecord`).

    Raises:
        UnsafePickleError: the file asks for a global outside `ALLOWED_GLOBALS` (nothing from it is executed).
    """
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as handle:
            return load_network_pickle(handle)
    return NetworkPickleUnpickler(file).load()


__all__ = [
    "ALLOWED_GLOBALS",
    "ModuleRecord",
    "NetworkPickleUnpickler",
    "PersistentObject",
    "TorchModuleRecord",
    "UnsafePickleError",
    "load_network_pickle",
]
