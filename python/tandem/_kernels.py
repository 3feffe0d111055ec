# SPDX-License-Identifier: MIT
"""Kernel descriptions the C API does not expose, and user kernels compiled from Python.

* ``describe_outputs``: the dtype and shape of a kernel's outputs, so ``rt.map`` can allocate
  them when ``out`` is None (the C API validates outputs but has no call that describes them).
* ``pack_params``: a dict of parameters packed into the kernel's C parameter struct.
* ``kernel()``: a user kernel in tandem's dialect, compiled for the CPU by the system C
  compiler into a cached shared object (keyed by the generated source, the compiler and its
  flags) and handed as dialect source to the device backends (OpenCL, NVRTC).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from . import _tandem

# ---- built-in kernels ------------------------------------------------------------------------

# name -> (struct format, field names, defaults): tandem/kernel.h's parameter blocks.
_PARAMS: Dict[str, Tuple[str, Tuple[str, ...], Dict[str, Any]]] = {
    "axpy": ("=d", ("a",), {}),
    "scale_shift": ("=dd", ("scale", "shift"), {"shift": 0.0}),
    "normalize_u8": ("=4f4fii", ("mean", "std", "flip", "reserved"), {"flip": 0, "reserved": 0}),
    "pi_leibniz": ("=q", ("terms",), {}),
    "linear": ("=ii", ("relu", "reserved"), {"relu": 0, "reserved": 0}),
    "softmax_xent": ("=fi", ("grad_scale", "reserved"), {"reserved": 0}),
    "sgd_momentum": ("=fffi", ("lr", "momentum", "weight_decay", "reserved"),
                     {"momentum": 0.0, "weight_decay": 0.0, "reserved": 0}),
    "adam": ("=fffffi", ("lr", "beta1", "beta2", "eps", "weight_decay", "step"),
             {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}),
}

_IN_PLACE = {"sgd_momentum", "adam"}

Spec = Tuple[str, Tuple[int, ...]]


def _rows(specs: List[Spec], rows: Optional[int], kernel: str) -> int:
    if rows is not None:
        return int(rows)
    if specs:
        return specs[0][1][0] if specs[0][1] else 1
    raise TypeError(f"map({kernel!r}): a kernel without inputs needs rows=N (or out=)")


def _need(specs: List[Spec], n: int, kernel: str) -> None:
    if len(specs) < n:
        raise _tandem.InvalidArgument(f"map({kernel!r}): expects at least {n} input(s), got {len(specs)}")


def describe_outputs(kernel: str, specs: List[Spec], params: Any, rows: Optional[int]) -> List[Spec]:
    """Output (dtype, shape) list of a map of `kernel` over inputs described by `specs`."""
    user = _USER.get(kernel)
    if user is not None:
        return user._describe(specs, rows)
    if kernel in ("exp_sinh", "scale_shift", "axpy"):
        _need(specs, 1, kernel)
        return [specs[0]]
    if kernel in ("sum", "mean", "sumsq"):
        _need(specs, 1, kernel)
        return [(specs[0][0], (_rows(specs, rows, kernel),))]
    if kernel == "normalize_u8":
        _need(specs, 1, kernel)
        shape = specs[0][1]
        if len(shape) != 4:
            raise _tandem.ShapeError(f"normalize_u8: x must be u8 [N, H, W, C], got shape {shape}")
        n, h, w, c = shape
        return [("f32", (n, c, h, w))]
    if kernel == "pi_leibniz":
        return [("f64", (_rows(specs, rows, kernel),))]
    if kernel == "linear":
        _need(specs, 2, kernel)
        return [("f32", (specs[0][1][0], specs[1][1][-1]))]
    if kernel == "linear_grad_x":
        _need(specs, 2, kernel)
        return [("f32", (specs[0][1][0], specs[1][1][0]))]
    if kernel == "linear_grad_w":
        _need(specs, 2, kernel)
        return [("f32", (specs[0][1][-1], specs[1][1][-1]))]
    if kernel == "colsum":
        _need(specs, 1, kernel)
        return [("f32", (specs[0][1][-1],))]
    if kernel == "softmax_xent":
        _need(specs, 1, kernel)
        b, c = specs[0][1][0], specs[0][1][-1]
        return [("f32", (b, c)), ("f32", (b,)), ("i32", (b,))]
    if kernel in _IN_PLACE:
        raise TypeError(f"map({kernel!r}) updates its tensors in place: pass out=(...)")
    raise _tandem.NotFoundError(
        f"map({kernel!r}): no output description for this kernel (unknown name?): pass out=")


def _pack(fmt: str, fields: Sequence[str], defaults: Dict[str, Any], kernel: str,
          params: Dict[str, Any]) -> bytes:
    if not isinstance(params, dict):
        raise TypeError(f"params for {kernel!r}: expected a dict or a bytes-like block")
    unknown = set(params) - set(fields)
    if unknown:
        raise TypeError(f"params for {kernel!r}: unknown field(s) {sorted(unknown)}; "
                        f"fields are {list(fields)}")
    values: List[Any] = []
    for f in fields:
        if f in params:
            v = params[f]
        elif f in defaults:
            v = defaults[f]
        else:
            raise TypeError(f"params for {kernel!r}: missing field {f!r}")
        if f in ("mean", "std"):
            v = list(v)
            if not 1 <= len(v) <= 4:
                raise ValueError(f"params for {kernel!r}: {f} takes 1 to 4 values")
            values.extend(v + [0.0 if f == "mean" else 1.0] * (4 - len(v)))
        else:
            values.append(v)
    try:
        return struct.pack(fmt, *values)
    except struct.error as e:
        raise TypeError(f"params for {kernel!r}: {e}") from None


def pack_params(kernel: str, params: Any) -> bytes:
    """The C parameter block of `kernel` from a dict of its fields."""
    user = _USER.get(kernel)
    if user is not None:
        return user._pack(params)
    spec = _PARAMS.get(kernel)
    if spec is None:
        raise TypeError(f"map({kernel!r}): no parameter description for this kernel: pass "
                        f"params as bytes (its C struct)")
    return _pack(spec[0], spec[1], spec[2], kernel, params)


# ---- user kernels --------------------------------------------------------------------------

_DTYPES = {
    "u8": ("tdm_u8", "B", 0), "i32": ("tdm_i32", "i", 1), "i64": ("tdm_i64", "q", 2),
    "f32": ("float", "f", 3), "f64": ("double", "d", 4),
}
_ALIASES = {"uint8": "u8", "int32": "i32", "int64": "i64", "float32": "f32", "float64": "f64"}
_USER: Dict[str, "Kernel"] = {}
_USER_LOCK = threading.Lock()
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


def _dtype_name(d: Any) -> str:
    if isinstance(d, str):
        d = _ALIASES.get(d, d)
        if d in _DTYPES:
            return d
    try:
        import numpy as np
        name = np.dtype(d).name
        name = _ALIASES.get(name, name)
        if name in _DTYPES:
            return name
    except TypeError:
        pass
    raise _tandem.DTypeError(f"user kernels take u8, i32, i64, f32 or f64 arguments, not {d!r}")


def _args(spec: Any, what: str) -> List[Tuple[str, str]]:
    if spec is None:
        return []
    if isinstance(spec, dict):
        spec = list(spec.items())
    out = []
    for item in spec:
        if isinstance(item, str):
            raise TypeError(f"{what}: give (name, dtype) pairs, e.g. [('x', 'f64')]")
        name, dt = item
        if not _NAME_RE.match(name):
            raise ValueError(f"{what}: {name!r} is not a C identifier")
        out.append((name, _dtype_name(dt)))
    return out


def _cache_dir() -> str:
    d = os.environ.get("TANDEM_KERNEL_CACHE")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "tandem", "kernels")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def _include_dirs() -> List[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    inc = os.path.join(here, "include")
    if os.path.exists(os.path.join(inc, "tdm_dialect.h")):
        return [inc]
    # Running from the source tree (python/tandem): the repository's headers.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    return [os.path.join(root, "include"), os.path.join(root, "kernels")]


_COMPILER_IDS: Dict[str, str] = {}


def _compiler_id(cc: List[str]) -> str:
    key = " ".join(cc)
    if key not in _COMPILER_IDS:
        try:
            out = subprocess.run(cc + ["--version"], capture_output=True, text=True, timeout=30)
            _COMPILER_IDS[key] = out.stdout.splitlines()[0] if out.stdout else key
        except (OSError, subprocess.SubprocessError) as e:
            raise _tandem.Error(f"tandem.kernel: cannot run the C compiler {key!r}: {e}") from None
    return _COMPILER_IDS[key]


class Kernel:
    """A user kernel (tandem.kernel()): pass it, or its name, to rt.map."""

    def __init__(self, name: str, source: str, inputs: Any, outputs: Any, params: Any,
                 cc: Optional[str] = None, cflags: Optional[Sequence[str]] = None,
                 device: bool = True, work: Optional[str] = None):
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"kernel name {name!r}: 1..40 characters of [A-Za-z0-9_], "
                             f"not starting with a digit")
        self.name = name
        self.source = source
        self.inputs = _args(inputs, "inputs")
        self.outputs = _args(outputs, "outputs")
        self.params = _args(params, "params")
        if not self.outputs:
            raise ValueError("a kernel needs at least one output")
        if len(self.inputs) + len(self.outputs) + len(self.params) + 2 > 16:
            raise ValueError("a kernel takes at most 14 arguments (inputs, outputs, params)")
        if work is not None and work not in [nm for nm, _ in self.params]:
            raise ValueError(f"work={work!r}: not one of the kernel's params "
                             f"{[nm for nm, _ in self.params]}")
        self.work = work
        self._fmt = "=" + "".join(_DTYPES[d][1] for _, d in self.params)
        self.params_size = struct.calcsize(self._fmt) if self.params else 0
        self._runtimes: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._lock = threading.Lock()
        self._device = device
        self.c_source = self._c_source()
        self.device_source = self._device_source() if device else None
        self.so_path = self._compile(cc, cflags)
        self._seq = _tandem._load_kernel(self.so_path)

    def __repr__(self) -> str:
        return (f"tandem.Kernel({self.name!r}, inputs={self.inputs}, outputs={self.outputs}, "
                f"params={self.params})")

    # ---- generated code --------------------------------------------------------------------
    def _item_args(self, in_ptr: str, out_ptr: str, prm: str) -> str:
        a = [in_ptr.format(k=k) for k in range(len(self.inputs))]
        a += [out_ptr.format(k=k) for k in range(len(self.outputs))]
        a += [prm.format(name=n) for n, _ in self.params]
        return ", ".join(["i"] + a)

    def _device_source(self) -> str:
        n = self.name
        sig = [f"TDM_GLOBAL const {_DTYPES[d][0]} *in{k}" for k, (_, d) in enumerate(self.inputs)]
        sig += [f"TDM_GLOBAL {_DTYPES[d][0]} *out{k}" for k, (_, d) in enumerate(self.outputs)]
        sig += [f"{_DTYPES[d][0]} p_{nm}" for nm, d in self.params]
        sig += ["tdm_idx begin", "tdm_idx end"]
        call = self._item_args("in{k}", "out{k}", "p_{name}")
        return (f"{self.source}\n"
                f"#if TDM_DIALECT_DEVICE\n"
                f"TDM_KERNEL {n}_entry({', '.join(sig)})\n{{\n"
                f"    for (tdm_idx i = begin + TDM_GLOBAL_ID(); i < end; i += TDM_GLOBAL_SIZE())\n"
                f"        {n}({call});\n}}\n#endif\n")

    def _c_source(self) -> str:
        n = self.name
        lines = [
            "/* Generated by tandem.kernel() for the CPU backends. */",
            "#include <stdio.h>",
            "#include <string.h>",
            '#include "tdm_dialect.h"',
            "#include <tandem/status.h>",
            "#include <tandem/kernel.h>",
            "typedef struct {",
            "    tdm_dtype (*dtype)(const tdm_tensor *);",
            "    int (*ndim)(const tdm_tensor *);",
            "    const int64_t *(*shape)(const tdm_tensor *);",
            "    int64_t (*numel)(const tdm_tensor *);",
            "} tdm_py_kernel_api;",
            f"static const tdm_py_kernel_api *{n}_api;",
            f"__attribute__((visibility(\"default\"))) void {n}_bind(const tdm_py_kernel_api *a) {{ {n}_api = a; }}",
            "#line 1 \"<tandem.kernel source>\"",
            self.source,
            "#line 1000000 \"<tandem.kernel wrapper>\"",
        ]
        if self.params:
            lines.append("typedef struct {")
            lines += [f"    {_DTYPES[d][0]} {nm};" for nm, d in self.params]
            lines.append(f"}} {n}_params_t;")
        # CPU: one batch of rows; items are every element of the batch's rows.
        lines.append(f"__attribute__((visibility(\"default\"))) int {n}_cpu(const tdm_kernel_args *a)\n{{")
        lines.append("    int64_t rows = a->end - a->begin;")
        rowel = "a->in_row_elems[0]" if self.inputs else "a->out_row_elems[0]"
        lines.append(f"    int64_t nitems = rows * {rowel};")
        for k, (_, d) in enumerate(self.inputs):
            lines.append(f"    const {_DTYPES[d][0]} *in{k} = (const {_DTYPES[d][0]} *)a->in[{k}];")
        for k, (_, d) in enumerate(self.outputs):
            lines.append(f"    {_DTYPES[d][0]} *out{k} = ({_DTYPES[d][0]} *)a->out[{k}];")
        if self.params:
            lines.append(f"    {n}_params_t p;\n    memcpy(&p, a->params, sizeof p);")
        call = self._item_args("in{k}", "out{k}", "p.{name}")
        lines.append(f"    for (int64_t i = 0; i < nitems; i++)\n        {n}({call});")
        lines.append("    return 0;\n}")
        if self.work is not None:
            # tdm_kernel_def.work: the work of an item is the value of that param
            lines.append(
                f"__attribute__((visibility(\"default\"))) double {n}_work(const void *params, "
                "size_t ps)\n{")
            lines.append(f"    {n}_params_t p;\n    if (!params || ps != sizeof p)\n        return 0;")
            lines.append(f"    memcpy(&p, params, sizeof p);\n    return (double)p.{self.work};\n}}")
        # infer: dtypes as declared; every input has input 0's shape; outputs too.
        lines.append(
            f"__attribute__((visibility(\"default\"))) int {n}_infer(const tdm_tensor *const *in, int n_in, "
            "const void *params, size_t ps, tdm_tensor_desc *out, int n_out, char *msg, size_t len)\n{")
        lines.append("    (void)params; (void)ps;")
        for k, (nm, d) in enumerate(self.inputs):
            lines.append(
                f"    if ({n}_api->dtype(in[{k}]) != {_DTYPES[d][2]}) {{ snprintf(msg, len, "
                f"\"{n}: input {k} ({nm}) must be {d}\"); return TDM_EDTYPE; }}")
        if self.inputs:
            lines.append(
                "    for (int k = 1; k < n_in; k++) {\n"
                f"        if ({n}_api->ndim(in[k]) != {n}_api->ndim(in[0])) goto shape;\n"
                f"        for (int d = 0; d < {n}_api->ndim(in[0]); d++)\n"
                f"            if ({n}_api->shape(in[k])[d] != {n}_api->shape(in[0])[d]) goto shape;\n"
                "    }")
        lines.append("    for (int k = 0; k < n_out; k++) {")
        if self.inputs:
            lines.append(f"        out[k].ndim = {n}_api->ndim(in[0]);")
            lines.append(f"        for (int d = 0; d < out[k].ndim; d++) out[k].shape[d] = {n}_api->shape(in[0])[d];")
        else:
            lines.append("        out[k].ndim = 1; out[k].shape[0] = 0;")
        lines.append("    }")
        for k, (_, d) in enumerate(self.outputs):
            lines.append(f"    out[{k}].dtype = {_DTYPES[d][2]};")
        lines.append("    return 0;")
        if self.inputs:
            lines.append(f"shape:\n    snprintf(msg, len, \"{n}: every input must have input 0's shape\");\n"
                         "    return TDM_ESHAPE;")
        lines.append("}")
        # dev: the launch of <name>_entry.
        lines.append(
            f"__attribute__((visibility(\"default\"))) int {n}_dev(const tdm_tensor *const *in, int n_in, "
            "const void *params, size_t ps, tdm_dev_launch *l, char *msg, size_t len)\n{")
        lines.append("    (void)n_in; (void)ps; (void)msg; (void)len;")
        lines.append(f"    memset(l, 0, sizeof *l);\n    strcpy(l->entry, \"{n}_entry\");")
        lines.append("    int k = 0;")
        for k in range(len(self.inputs)):
            lines.append(f"    l->args[k].kind = TDM_DEV_ARG_INPUT; l->args[k++].index = {k};")
        for k in range(len(self.outputs)):
            lines.append(f"    l->args[k].kind = TDM_DEV_ARG_OUTPUT; l->args[k++].index = {k};")
        off = 0
        for nm, d in self.params:
            size = struct.calcsize("=" + _DTYPES[d][1])
            lines.append(f"    l->args[k].kind = TDM_DEV_ARG_VALUE; l->args[k].size = {size};")
            lines.append(f"    memcpy(l->args[k++].value, (const char *)params + {off}, {size});")
            off += size
        lines.append("    l->args[k++].kind = TDM_DEV_ARG_BEGIN;\n    l->args[k++].kind = TDM_DEV_ARG_END;")
        lines.append("    l->n_args = k;")
        if self.inputs:
            lines.append(f"    int64_t d0 = {n}_api->ndim(in[0]) ? {n}_api->shape(in[0])[0] : 1;")
            lines.append(f"    l->items_per_row = d0 > 0 ? {n}_api->numel(in[0]) / d0 : 1;")
        else:
            lines.append("    l->items_per_row = 1;")
        lines.append("    return 0;\n}")
        return "\n".join(lines) + "\n"

    def _compile(self, cc: Optional[str], cflags: Optional[Sequence[str]]) -> str:
        ccv = (cc or os.environ.get("CC") or "cc").split()
        flags = list(cflags) if cflags is not None else ["-O3", "-std=c11", "-fno-math-errno"]
        flags += ["-fPIC", "-shared", "-fvisibility=hidden", "-D_GNU_SOURCE"]
        incs = _include_dirs()
        h = hashlib.sha256()
        for part in (self.c_source, " ".join(ccv), " ".join(flags), _compiler_id(ccv)):
            h.update(part.encode())
            h.update(b"\0")
        # The dialect header is part of what is compiled.
        for d in incs:
            p = os.path.join(d, "tdm_dialect.h")
            if os.path.exists(p):
                with open(p, "rb") as f:
                    h.update(f.read())
        key = h.hexdigest()[:32]
        cache = _cache_dir()
        so = os.path.join(cache, f"{self.name}-{key}.so")
        if os.path.exists(so):
            return so
        fd, tmp_c = tempfile.mkstemp(suffix=".c", dir=cache)
        with os.fdopen(fd, "w") as f:
            f.write(self.c_source)
        tmp_so = tmp_c[:-2] + ".so"
        cmd = ccv + flags + [f"-I{d}" for d in incs] + ["-o", tmp_so, tmp_c, "-lm"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as e:
            os.unlink(tmp_c)
            raise _tandem.Error(f"tandem.kernel({self.name!r}): cannot run {ccv[0]}: {e}") from None
        os.unlink(tmp_c)
        if r.returncode != 0:
            if os.path.exists(tmp_so):
                os.unlink(tmp_so)
            raise _tandem.KernelError(
                f"tandem.kernel({self.name!r}): the C compiler failed:\n{r.stderr.strip()}")
        os.replace(tmp_so, so)  # atomic: concurrent builders leave one complete file
        return so

    # ---- used by rt.map ----------------------------------------------------------------------
    def _ensure(self, rt: Any, policy: Any = None) -> str:
        """Registers the kernel with `rt` on first use; returns its name (rt.map calls it)."""
        opened, procs = _tandem._open_seq(rt)
        if procs and opened < self._seq and policy not in ("threads", "gpu", "opencl", "cuda"):
            raise _tandem.InvalidArgument(
                f"kernel {self.name!r} was defined after this runtime forked its worker "
                f"processes, which cannot load it: define it before opening the Runtime, or "
                f"pass policy='threads' (or a device policy)")
        if rt in self._runtimes:
            return self.name
        with self._lock:
            if rt not in self._runtimes:
                if not _tandem._kernel_exists(rt, self.name):
                    _tandem._register_kernel(rt, self.so_path, self.name, len(self.inputs),
                                             len(self.outputs), self.params_size,
                                             self.device_source)
                self._runtimes.add(rt)
        return self.name

    def _describe(self, specs: List[Spec], rows: Optional[int]) -> List[Spec]:
        if specs:
            shape = specs[0][1]
        else:
            shape = (_rows(specs, rows, self.name),)
        return [(d, shape) for _, d in self.outputs]

    def _pack(self, params: Any) -> bytes:
        names = tuple(n for n, _ in self.params)
        return _pack(self._fmt, names, {}, self.name, params)


def kernel(name: str, source: str, inputs: Any = (), outputs: Any = (), params: Any = (), *,
           cc: Optional[str] = None, cflags: Optional[Sequence[str]] = None,
           device: bool = True, work: Optional[str] = None) -> Kernel:
    """Defines an elementwise user kernel from a body in tandem's kernel dialect.

    `source` defines ``TDM_DEVICE_FN void <name>(tdm_idx i, <inputs>, <outputs>, <params>)``
    that computes item ``i`` (an element index into the batch's rows): inputs are
    ``TDM_GLOBAL const T *``, outputs ``TDM_GLOBAL T *``, params by value. `inputs`, `outputs`
    and `params` are (name, dtype) pairs, dtypes among u8, i32, i64, f32, f64. Every input has
    input 0's shape, and so do the outputs.

    The body is compiled now for the CPU by the system C compiler (``cc``, or $CC) into a shared
    object cached under $TANDEM_KERNEL_CACHE (default ~/.cache/tandem/kernels), keyed by the
    generated source, the compiler and its flags; with device=True the same body is given to
    the OpenCL and CUDA backends (compiled by their drivers at first use). Worker processes
    (procs) run it only when the kernel is defined before the Runtime opens (they are forked
    at open). The kernel is registered with a runtime the first time a map uses it.

    `work` names a param whose value is how much work one item does (say the iterations of a
    loop in the body): the scheduler then keeps what it learns of the kernel's time per item
    apart for each power of 2 of that value (tdm_kernel_def.work), so a map of 100x the
    iterations does not start from the figures of a light one. Without it, every map of the
    kernel shares one set of figures.
    """
    k = Kernel(name, source, inputs, outputs, params, cc=cc, cflags=cflags, device=device,
               work=work)
    with _USER_LOCK:
        old = _USER.get(name)
        if old is not None and old.c_source != k.c_source:
            raise _tandem.ExistsError(f"a different kernel named {name!r} is already defined")
        _USER[name] = old or k
    return _USER[name]
