# SPDX-License-Identifier: MIT
"""tandem: NumPy arrays on tandem's shared and pinned memory, kernels run on CPU threads,
worker processes and devices with the GIL released, tensor files, a result cache, DLPack.

    import numpy as np, tandem
    with tandem.Runtime() as rt:
        x = rt.empty(1_000_000, "f64", memory="shared")   # a numpy array over tandem memory
        x[:] = np.linspace(0, 1, x.size)
        y = rt.map("exp_sinh", x)                          # y = exp(x) * sinh(x)

Everything here is a thin layer over tandem's C API (tandem.h); errors are tandem.Error
subclasses carrying the TDM_E* code (.code, .status) and the library's message.
"""
from __future__ import annotations

import atexit
import os
import threading
from typing import Any, Dict, Optional

from . import _tandem
from ._tandem import (  # noqa: F401
    Batch, BusyError, CancelledError, CommError, CorruptError, DoneError, DTypeError, Error,
    ExistsError, FormatError, InvalidArgument, IOError_, KernelError, LayoutError, MapJob,
    NoDeviceError, NoSharedMemory, NotFoundError, OutOfMemory, PermissionError_, Progress,
    Runtime, ShapeError, SizeOverflowError, SystemCallError, Tensor, TimeoutError_, WorkerError,
    from_dlpack, strerror, system_info, tensor_of,
)
from ._kernels import Kernel, kernel  # noqa: F401
from .parallel import Parallel, RemoteTraceback, delayed  # noqa: F401

__version__ = _tandem.__version__

_default: Optional[Runtime] = None
_default_lock = threading.Lock()


def default_runtime() -> Runtime:
    """The process's shared runtime for module-level functions (load, save, Cache without rt=):
    opened on first use with the defaults (TDM_* environment variables apply), closed at exit."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = Runtime()
        return _default


@atexit.register
def _close_default() -> None:
    global _default
    if _default is not None:
        _default.close()
        _default = None


def info() -> Dict[str, Any]:
    """What `tandem info` prints, as a dict: version, system facts, backends, devices, kernels
    and shared-memory limits (opens a short-lived runtime without worker processes)."""
    with Runtime(procs=0) as rt:
        return {
            "version": __version__,
            "threads": rt.threads,
            "system": system_info(),
            "backends": rt.backends(),
            "devices": rt.devices(),
            "kernels": rt.kernels(),
            "shared_memory": rt.shm_info(),
            "cuda_built": bool(_tandem.HAVE_CUDA),
            "opencl_built": bool(_tandem.HAVE_OPENCL),
        }


def _is_npz(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False  # tdm_load reports the error with the path


def load(path: Any, mmap: Optional[str] = None, *, memory: Optional[str] = None,
         max_bytes: int = 0, rt: Optional[Runtime] = None) -> Any:
    """Loads a .npy, a compressed tensor file (.tdz) or a .npz (numpy.load's formats).

    mmap: None reads into new memory (`memory` = 'host', 'shared', 'pinned'); 'r', 'r+' or 'c'
    memory-map the file (.npy and stored .npz members): the array's memory is the mapping,
    read-only for 'r', written through to the file for 'r+', copy-on-write for 'c'. A .npz
    gives a dict of arrays. Corrupt files raise FormatError / CorruptError, never crash."""
    rt = rt or default_runtime()
    p = os.fspath(path)
    if _is_npz(p):
        return _tandem._load_npz(rt, p, mmap)
    return _tandem._load(rt, p, mmap, memory, max_bytes)


def save(path: Any, arr: Any, codec: Optional[str] = None, level: int = 0, *,
         fsync: bool = False, rt: Optional[Runtime] = None) -> None:
    """Saves an array: a .npy (codec None, readable by numpy.load) or a compressed tensor file
    (codec 'zstd', 'lz4' or 'deflate'; level 0 = the codec's default), compressed in parallel.
    The file appears atomically (temporary file + rename). No copy of a C-contiguous array."""
    _tandem._save(rt or default_runtime(), os.fspath(path), arr, codec, level, fsync)


def savez(path: Any, *args: Any, compressed: bool = False, rt: Optional[Runtime] = None,
          **kwds: Any) -> None:
    """numpy.savez: arrays as members of a .npz (positional ones named arr_0, arr_1, ...);
    compressed=True deflates them (numpy.savez_compressed). Stored members are aligned so
    load(..., mmap='r') maps them."""
    arrays: Dict[str, Any] = {}
    for i, a in enumerate(args):
        arrays[f"arr_{i}"] = a
    for k, v in kwds.items():
        if k in arrays:
            raise ValueError(f"savez: cannot use un-named variables and keyword {k}")
        arrays[k] = v
    _tandem._savez(rt or default_runtime(), os.fspath(path), arrays, compressed)


def savez_compressed(path: Any, *args: Any, rt: Optional[Runtime] = None, **kwds: Any) -> None:
    """savez(..., compressed=True)."""
    savez(path, *args, compressed=True, rt=rt, **kwds)


def file_info(path: Any, *, rt: Optional[Runtime] = None) -> Dict[str, Any]:
    """A file's header (kind, dtype, shape, codec, sizes) without reading its data."""
    return _tandem._file_info(rt or default_runtime(), os.fspath(path))


class Cache(_tandem._Cache):
    """A result cache directory for maps (joblib's Memory for tandem's kernels).

    ``cache.map(kernel, *inputs, ...)`` takes rt.map's arguments: a hit (same kernel, version,
    parameters and input bytes) loads the stored outputs — memory-mapped with mmap='r' —
    instead of computing; a miss runs the map and stores them. ``cache.last_hit`` tells which.
    bytes_limit evicts least recently used entries; codec stores compressed entries."""

    def __init__(self, dir: Any, bytes_limit: int = 0, *, mmap: Optional[str] = None,
                 codec: Optional[str] = None, level: int = 0, memory: Optional[str] = None,
                 verify: bool = True, rt: Optional[Runtime] = None):
        super().__init__(rt or default_runtime(), os.fspath(dir), bytes_limit, mmap, codec, level,
                         memory, verify)


del Any, Dict, Optional  # typing names are not part of the package's namespace
