# SPDX-License-Identifier: MIT
import datetime
import gc

import numpy as np
import pytest

import tandem


def test_numpy_imports_a_tandem_tensor_without_copy(rt):
    x = rt.zeros((5, 4), "f32")
    t = tandem.tensor_of(x)
    assert t.__dlpack_device__() == (1, 0)  # kDLCPU
    y = np.from_dlpack(t)  # numpy 1.24: legacy __dlpack__()
    assert y.ctypes.data == x.ctypes.data and y.shape == (5, 4) and y.dtype == np.float32
    x[1, 2] = 3  # (numpy 1.24 makes imported arrays read-only)
    assert y[1, 2] == 3


def test_tandem_imports_numpy_without_copy():
    a = np.arange(24, dtype=np.int64).reshape(4, 6)
    b = tandem.from_dlpack(a)
    assert b.ctypes.data == a.ctypes.data and b.shape == a.shape and b.dtype == a.dtype
    b[0, 0] = 99
    assert a[0, 0] == 99
    # a strided producer keeps its strides
    s = tandem.from_dlpack(a[:, ::2])
    np.testing.assert_array_equal(s, a[:, ::2])
    c = tandem.from_dlpack(a, copy=True)
    assert c.ctypes.data != a.ctypes.data
    np.testing.assert_array_equal(c, a)


def test_versioned_capsule_round_trip(rt):
    x = rt.empty(10, "f64")
    x[:] = np.arange(10)
    t = tandem.tensor_of(x)
    cap = t.__dlpack__(max_version=(1, 1))
    assert "dltensor_versioned" in repr(cap)
    y = tandem.from_dlpack(cap)
    assert y.ctypes.data == x.ctypes.data
    np.testing.assert_array_equal(y, np.arange(10))
    with pytest.raises(ValueError):  # a capsule is consumed once
        tandem.from_dlpack(cap)
    legacy = t.__dlpack__()
    assert '"dltensor"' in repr(legacy)
    z = tandem.from_dlpack(legacy)
    assert z.ctypes.data == x.ctypes.data
    # tandem.Tensor is itself a producer
    w = tandem.from_dlpack(t)
    assert w.ctypes.data == x.ctypes.data


def test_capsule_keeps_the_tensor_alive(rt):
    x = rt.zeros(1000, "f64")
    t = tandem.tensor_of(x)
    ptr = x.ctypes.data
    cap = t.__dlpack__(max_version=(1, 0))
    del x, t
    gc.collect()
    y = tandem.from_dlpack(cap)
    assert y.ctypes.data == ptr
    y[:] = 1.0
    assert y.sum() == 1000
    unused = tandem.tensor_of(rt.zeros(3)).__dlpack__()
    del unused  # never consumed: the destructor frees it
    gc.collect()


def test_export_options(rt, tmp_path):
    t = tandem.tensor_of(rt.zeros(4))
    with pytest.raises(BufferError):
        t.__dlpack__(stream=1)
    with pytest.raises(BufferError):
        t.__dlpack__(dl_device=(2, 0))
    c = tandem.from_dlpack(t.__dlpack__(max_version=(1, 1), copy=True))
    assert c.ctypes.data != t.data_ptr
    with pytest.raises(TypeError):
        t.__dlpack__(copy="yes")
    p = tmp_path / "r.npy"
    np.save(p, np.arange(3.0))
    ro = tandem.tensor_of(tandem.load(p, mmap="r", rt=rt))
    with pytest.raises(BufferError):
        ro.__dlpack__()  # read-only cannot be said in a legacy capsule
    v = tandem.from_dlpack(ro.__dlpack__(max_version=(1, 0)))
    assert not v.flags.writeable


class FakeDevice:
    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA

    def __dlpack__(self, **kw):  # pragma: no cover - never called
        raise AssertionError


def test_import_errors():
    with pytest.raises(BufferError):
        tandem.from_dlpack(FakeDevice())
    with pytest.raises(TypeError):
        tandem.from_dlpack(42)
    with pytest.raises(ValueError):
        tandem.from_dlpack(np.ones(3), device=(2, 0))
    with pytest.raises(TypeError):
        tandem.from_dlpack(np.ones(3), copy="no")
    with pytest.raises(ValueError):
        tandem.from_dlpack(datetime.datetime_CAPI)  # a capsule, not a DLPack one


def test_imported_arrays_feed_maps_without_copies(rt):
    a = np.linspace(0, 1, 100)
    b = tandem.from_dlpack(a)
    out = np.empty_like(a)
    rt.map("exp_sinh", b, out=out)
    np.testing.assert_allclose(out, np.exp(a) * np.sinh(a))


NP2 = tuple(int(v) for v in np.__version__.split(".")[:2]) >= (2, 1)


@pytest.mark.skipif(not NP2, reason="numpy >= 2.1 speaks DLPack 1.x (versioned capsules)")
def test_versioned_interop_with_numpy2(rt):
    x = rt.zeros(8, "f32")
    t = tandem.tensor_of(x)
    y = np.from_dlpack(t)  # numpy asks for max_version=(1, x): a versioned capsule
    assert y.ctypes.data == x.ctypes.data
    c = np.from_dlpack(t, copy=True)
    assert c.ctypes.data != x.ctypes.data
    a = np.arange(6.0)
    cap = a.__dlpack__(max_version=(1, 0))
    assert "dltensor_versioned" in repr(cap)
    b = tandem.from_dlpack(a)
    assert b.ctypes.data == a.ctypes.data
    ro = np.arange(3.0)
    ro.flags.writeable = False
    r = tandem.from_dlpack(ro)  # the read-only flag travels in a versioned capsule
    assert not r.flags.writeable and r.ctypes.data == ro.ctypes.data
    assert tandem.from_dlpack(a, copy=True).ctypes.data != a.ctypes.data
