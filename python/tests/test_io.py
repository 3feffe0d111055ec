# SPDX-License-Identifier: MIT
import os

import numpy as np
import pytest

import tandem


@pytest.fixture
def data():
    return np.random.default_rng(1).standard_normal((64, 33))


def test_save_is_numpy_readable_and_load_reads_numpy(tmp_path, rt, data):
    p = tmp_path / "a.npy"
    tandem.save(p, data, rt=rt)
    np.testing.assert_array_equal(np.load(p), data)
    q = tmp_path / "b.npy"
    np.save(q, data.astype(np.float32))
    b = tandem.load(q, rt=rt)
    assert b.dtype == np.float32
    np.testing.assert_array_equal(b, data.astype(np.float32))
    assert tandem.tensor_of(b) is not None


@pytest.mark.parametrize("codec", ["zstd", "lz4", "deflate"])
def test_compressed_round_trip(tmp_path, rt, data, codec):
    p = tmp_path / f"c.{codec}.tdz"
    tandem.save(str(p), data, codec=codec, level=1, rt=rt)
    info = tandem.file_info(p, rt=rt)
    assert info["kind"] == "tdz" and info["codec"] == codec and info["shape"] == data.shape
    np.testing.assert_array_equal(tandem.load(p, rt=rt), data)


def test_mmap_modes(tmp_path, rt, data):
    p = tmp_path / "m.npy"
    np.save(p, data)
    r = tandem.load(p, mmap="r", rt=rt)
    assert not r.flags.writeable
    assert "mapped" in tandem.tensor_of(r).memory
    np.testing.assert_array_equal(r, data)
    with pytest.raises(ValueError):
        r[0, 0] = 1
    w = tandem.load(p, mmap="r+", rt=rt)
    w[0, 0] = 42.0
    del w
    assert np.load(p)[0, 0] == 42.0  # written through to the file
    c = tandem.load(p, mmap="c", rt=rt)
    c[0, 0] = -1.0
    assert c[0, 0] == -1.0 and np.load(p)[0, 0] == 42.0  # copy on write
    # a mapped read-only array can be a map's input without a copy
    y = rt.map("exp_sinh", r)
    np.testing.assert_allclose(y, np.exp(r) * np.sinh(r))
    with pytest.raises(ValueError, match="read-only"):
        rt.map("exp_sinh", data, out=r)


def test_savez_and_npz_load(tmp_path, rt, data):
    p = tmp_path / "z.npz"
    tandem.savez(p, data, labels=np.arange(5, dtype=np.int32), rt=rt)
    z = np.load(p)
    np.testing.assert_array_equal(z["arr_0"], data)
    np.testing.assert_array_equal(z["labels"], np.arange(5))
    d = tandem.load(p, rt=rt)
    assert set(d) == {"arr_0", "labels"}
    np.testing.assert_array_equal(d["labels"], np.arange(5))
    m = tandem.load(p, mmap="r", rt=rt)
    np.testing.assert_array_equal(m["arr_0"], data)
    q = tmp_path / "zc.npz"
    tandem.savez_compressed(q, x=data, rt=rt)
    np.testing.assert_array_equal(np.load(q)["x"], data)
    np.savez(tmp_path / "n.npz", a=data)
    np.testing.assert_array_equal(tandem.load(tmp_path / "n.npz", rt=rt)["a"], data)


def test_io_errors(tmp_path, rt, data):
    with pytest.raises(tandem.IOError_) as e:
        tandem.load(tmp_path / "missing.npy", rt=rt)
    assert isinstance(e.value, OSError) and "missing.npy" in str(e.value)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(tandem.FormatError):
        tandem.load(bad, rt=rt)
    with pytest.raises(ValueError):
        tandem.save(tmp_path / "x.tdz", data, codec="brotli", rt=rt)
    with pytest.raises(tandem.InvalidArgument):
        tandem.save(tmp_path / "x.tdz", data, codec="zstd", level=99, rt=rt)
    with pytest.raises(ValueError):
        tandem.load(tmp_path / "x.npy", mmap="w", rt=rt)
    with pytest.raises(tandem.IOError_):
        tandem.save(tmp_path / "no" / "such" / "dir.npy", data, rt=rt)
    with pytest.raises(tandem.DTypeError):
        np.save(tmp_path / "c.npy", np.zeros(3, dtype=np.complex128))
        tandem.load(tmp_path / "c.npy", rt=rt)
    with pytest.raises(tandem.InvalidArgument):  # mmap of a compressed file
        tandem.save(tmp_path / "c.tdz", data, codec="lz4", rt=rt)
        tandem.load(tmp_path / "c.tdz", mmap="r", rt=rt)
    p = tmp_path / "t.tdz"
    tandem.save(p, data, codec="zstd", rt=rt)
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises((tandem.CorruptError, tandem.FormatError)):
        tandem.load(p, rt=rt)
    with pytest.raises(ValueError):
        tandem.savez(tmp_path / "d.npz", data, arr_0=data, rt=rt)


def test_default_runtime_is_used_without_rt(tmp_path, data):
    p = tmp_path / "d.npy"
    tandem.save(p, data)
    np.testing.assert_array_equal(tandem.load(p), data)
    assert tandem.default_runtime() is tandem.default_runtime()


def test_cache_hits_after_a_miss(tmp_path, rt):
    x = np.linspace(0, 1, 1000)
    with tandem.Cache(tmp_path / "cache", rt=rt, mmap="r") as cache:
        y1 = cache.map("exp_sinh", x)
        assert cache.last_hit == 0
        y2 = cache.map("exp_sinh", x)
        assert cache.last_hit == 1
        np.testing.assert_array_equal(y1, y2)
        assert not y2.flags.writeable  # memory-mapped from the entry
        s = cache.stats()
        assert s["hits"] == 1 and s["misses"] == 1 and s["stores"] == 1
        nbytes, entries = cache.usage()
        assert entries == 1 and nbytes >= x.nbytes
        # other parameters, other entry
        z = cache.map("axpy", x, x, params={"a": 2.0})
        assert cache.last_hit == 0
        np.testing.assert_array_equal(z, 3 * x)
        out = np.empty_like(x)
        assert cache.map("exp_sinh", x, out=out) is out and cache.last_hit == 1
        cache.clear()
        assert cache.usage()[1] == 0
    with pytest.raises(tandem.Error, match="closed"):
        cache.stats()


def test_cache_errors(tmp_path, rt):
    f = tmp_path / "file"
    f.write_text("not a dir")
    with pytest.raises(tandem.IOError_):
        tandem.Cache(f, rt=rt)
    with pytest.raises(tandem.InvalidArgument):
        tandem.Cache(tmp_path / "c2", mmap="r+", rt=rt)
    with tandem.Cache(tmp_path / "c3", rt=rt) as cache:
        with pytest.raises(tandem.ShapeError):
            cache.map("axpy", np.ones(3), np.ones(4), params={"a": 1.0})
        with pytest.raises(TypeError):
            cache.map("exp_sinh", np.ones(3), progress=True)


@pytest.mark.parametrize("dt", [bool, np.int8, np.int16, np.uint16, np.uint32, np.uint64,
                                np.uint8, np.int32, np.int64, np.float32, np.float64])
def test_every_numpy_dtype_round_trips(tmp_path, rt, dt):
    a = (np.arange(24) % 7).astype(dt).reshape(4, 6)
    np.save(tmp_path / "a.npy", a)
    b = tandem.load(tmp_path / "a.npy", rt=rt)
    assert b.dtype == a.dtype and np.array_equal(a, b)
    tandem.save(tmp_path / "b.npy", b, rt=rt)
    assert np.array_equal(np.load(tmp_path / "b.npy"), a)
    e = rt.empty((2, 3), np.dtype(dt))
    assert e.dtype == np.dtype(dt)
