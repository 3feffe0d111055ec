# SPDX-License-Identifier: MIT
import numpy as np
import pytest

import tandem


@pytest.mark.parametrize("memory", ["host", "shared", "pinned", "shared+pinned"])
def test_empty_is_zero_copy_tandem_storage(rt, memory):
    x = rt.empty((100, 3), "f32", memory=memory)
    assert isinstance(x, np.ndarray)
    assert x.shape == (100, 3) and x.dtype == np.float32
    assert x.flags.c_contiguous and x.flags.writeable
    t = tandem.tensor_of(x)
    assert isinstance(t, tandem.Tensor)
    assert x.ctypes.data == t.data_ptr  # the array's memory is the tensor's
    if "shared" in memory:
        assert "shared" in t.memory
    x[:] = 7
    assert np.frombuffer(t, dtype=np.float32).sum() == 700 * 3


def test_views_find_their_tensor(rt):
    x = rt.zeros(10, "i64")
    assert tandem.tensor_of(x[2:5]) is tandem.tensor_of(x)
    assert tandem.tensor_of(np.zeros(3)) is None


@pytest.mark.parametrize("dtype,np_dtype", [
    ("u8", np.uint8), ("i32", np.int32), ("i64", np.int64), ("f16", np.float16),
    ("f32", np.float32), ("f64", np.float64), (np.float32, np.float32), ("float64", np.float64),
    (np.dtype("<i4"), np.int32)])
def test_dtypes_follow_numpy(rt, dtype, np_dtype):
    z = rt.zeros((2, 2), dtype)
    assert z.dtype == np_dtype
    assert (z == 0).all()


def test_scalar_and_empty_shapes(rt):
    assert rt.zeros((), "f64").shape == ()
    assert rt.empty((0, 5)).shape == (0, 5)
    assert rt.empty(7).shape == (7,)


def test_bad_arguments(rt):
    with pytest.raises(tandem.DTypeError):
        rt.empty(3, "complex128")
    with pytest.raises(TypeError):
        rt.empty(3, "not a dtype")
    with pytest.raises(ValueError):
        rt.empty(3, memory="gpu")
    with pytest.raises(ValueError):
        rt.empty((-1, 2))
    with pytest.raises(ValueError):
        rt.empty((1,) * 9)
    with pytest.raises(TypeError):
        rt.empty("abc")
    with pytest.raises(tandem.SizeOverflowError):
        rt.empty((1 << 40, 1 << 40), "f64")


def test_share_copies_once_then_never(rt):
    a = np.arange(12.0).reshape(3, 4)
    s = rt.share(a)
    assert s.ctypes.data != a.ctypes.data
    assert "shared" in tandem.tensor_of(s).memory
    np.testing.assert_array_equal(s, a)
    assert rt.share(s) is s  # already shared: the same array, no copy
    h = rt.zeros(4)  # tandem host memory: copied into shared memory
    assert "shared" in tandem.tensor_of(rt.share(h)).memory


def test_share_rejects_what_tandem_cannot_hold(rt):
    with pytest.raises(tandem.DTypeError):
        rt.share(np.zeros(3, dtype=np.complex64))
    with pytest.raises(tandem.LayoutError):
        rt.share(np.zeros((4, 4))[:, ::2])
    with pytest.raises(TypeError):
        rt.share(42)


def test_shm_limit_is_enospc():
    with tandem.Runtime(threads=1, shm_limit=1 << 20, use_env=False) as rt:
        with pytest.raises(tandem.NoSharedMemory) as e:
            rt.empty(1 << 20, "f64", memory="shared")
        assert isinstance(e.value, MemoryError)
        assert e.value.status == "TDM_ENOSPC"


def test_bf16_is_raw_words(rt):
    b = rt.zeros(3, "bf16")
    assert b.dtype == np.uint16
