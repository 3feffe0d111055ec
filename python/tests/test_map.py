# SPDX-License-Identifier: MIT
import os
import signal
import threading
import time

import numpy as np
import pytest

import tandem


def expected(x):
    return np.exp(x) * np.sinh(x)


def test_map_allocates_outputs(rt):
    x = np.linspace(-1, 1, 1000)
    y = rt.map("exp_sinh", x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    np.testing.assert_allclose(y, expected(x), rtol=1e-12)
    assert tandem.tensor_of(y) is not None  # tandem storage


def test_map_writes_out_in_place_without_copies(rt):
    x = np.linspace(0, 1, 4096).astype(np.float32)
    out = np.empty_like(x)
    r = rt.map("exp_sinh", x, out=out)
    assert r is out
    np.testing.assert_allclose(out, expected(x), rtol=1e-5)
    # a view of rows of a numpy array: only those rows are written
    big = np.zeros(100)
    rt.map("exp_sinh", np.ones(10), out=big[10:20])
    assert (big[:10] == 0).all() and (big[20:] == 0).all()
    np.testing.assert_allclose(big[10:20], expected(1.0))


def test_map_on_tandem_arrays_and_row_views(rt):
    x = rt.zeros(100, "f64", memory="shared")
    x[:] = np.arange(100) / 100
    y = rt.zeros(100, "f64", memory="shared")
    rt.map("exp_sinh", x[50:], out=y[50:])
    assert (y[:50] == 0).all()
    np.testing.assert_allclose(y[50:], expected(x[50:]))


def test_params_dict_or_bytes(rt):
    x, y = np.arange(5.0), np.ones(5)
    z = rt.map("axpy", x, y, params={"a": 3.0})
    np.testing.assert_array_equal(z, 3 * x + 1)
    z2 = rt.map("axpy", x, y, params=np.array([2.0]).tobytes())
    np.testing.assert_array_equal(z2, 2 * x + 1)
    s = rt.map("scale_shift", x, params={"scale": 2.0, "shift": -1.0})
    np.testing.assert_array_equal(s, 2 * x - 1)


def test_several_outputs_and_no_inputs(rt):
    z = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    label = np.arange(8, dtype=np.int32) % 5
    dz, loss, pred = rt.map("softmax_xent", z, label, params={"grad_scale": 1.0})
    assert dz.shape == (8, 5) and loss.shape == (8,) and pred.dtype == np.int32
    np.testing.assert_array_equal(pred, z.argmax(1))
    pi = rt.map("pi_leibniz", rows=4, params={"terms": 100000})
    np.testing.assert_allclose(pi, np.pi, rtol=1e-4)
    sums = rt.map("sum", np.ones((6, 7)))
    np.testing.assert_array_equal(sums, 7)


def test_report(rt):
    x = np.ones(10000)
    y, rep = rt.map("exp_sinh", x, report=True, policy="threads", batch_size=1000)
    assert rep["kernel"] == "exp_sinh" and rep["status"] == 0
    assert rep["items"] == 10000 and rep["batches"] == 10
    assert sum(w["items"] for w in rep["workers"]) == 10000
    assert all(w["backend"] == "cpu" for w in rep["workers"])


def test_errors_are_typed(rt):
    x = np.ones(10)
    with pytest.raises(tandem.ShapeError) as e:
        rt.map("axpy", x, np.ones(11), params={"a": 1.0})
    assert isinstance(e.value, ValueError) and e.value.code == -8
    assert "axpy" in str(e.value)
    with pytest.raises(tandem.DTypeError):
        rt.map("axpy", x, np.ones(10, np.float32), params={"a": 1.0})
    with pytest.raises(tandem.NotFoundError):
        rt.map("no_such_kernel", x)
    with pytest.raises(tandem.NotFoundError):
        rt.map("no_such_kernel", x, out=np.empty(10))
    with pytest.raises(tandem.InvalidArgument):  # params size is not the kernel's
        rt.map("axpy", x, x, params=b"\0" * 4)
    with pytest.raises(TypeError, match="missing field"):
        rt.map("axpy", x, x, params={})
    with pytest.raises(TypeError, match="unknown field"):
        rt.map("axpy", x, x, params={"a": 1.0, "b": 2})
    with pytest.raises(TypeError):
        rt.map("exp_sinh", x, nonsense=1)
    with pytest.raises(ValueError):
        rt.map("exp_sinh", x, policy="fastest")
    with pytest.raises(TypeError):
        rt.map("exp_sinh", [1.0, 2.0])
    with pytest.raises(TypeError):
        rt.map(42, x)
    with pytest.raises(TypeError):
        rt.map()
    with pytest.raises(tandem.LayoutError):
        rt.map("exp_sinh", np.ones((10, 10))[:, ::2])
    with pytest.raises(ValueError, match="read-only"):
        ro = np.ones(10)
        ro.flags.writeable = False
        rt.map("exp_sinh", x, out=ro)
    with pytest.raises(tandem.DTypeError):
        rt.map("exp_sinh", np.ones(10, dtype=np.complex128))
    with pytest.raises(TypeError, match="in place"):
        rt.map("sgd_momentum", x, x, x, params={"lr": 0.1})
    with pytest.raises(TypeError):
        rt.map("exp_sinh", x, progress=5)
    with pytest.raises(ValueError):
        rt.map("exp_sinh", x, progress_interval=0)
    with pytest.raises(ValueError):
        rt.map("exp_sinh", x, on_error="ignore")
    with pytest.raises(TypeError, match="rows"):
        rt.map("pi_leibniz", params={"terms": 1})
    with pytest.raises(tandem.NoDeviceError):
        rt.map("exp_sinh", x, policy="procs")  # this runtime has no worker processes


def test_progress_callback_runs_in_the_calling_thread(rt):
    seen = []
    me = threading.get_ident()

    def cb(p):
        assert threading.get_ident() == me
        assert isinstance(p, tandem.Progress)
        seen.append(p)

    x = np.ones(2_000_000)
    rt.map("exp_sinh", x, progress=cb, progress_interval=0.01, batch_size=10000)
    assert seen and seen[-1].final and seen[-1].done == seen[-1].total == 2_000_000
    assert len(seen[-1].per_worker) >= 1
    assert sum(1 for p in seen if p.final) == 1


def test_progress_callback_exception_cancels(rt):
    calls = []

    def cb(p):
        calls.append(p)
        raise RuntimeError("stop here")

    x = np.ones(20_000_000)
    with pytest.raises(RuntimeError, match="stop here"):
        rt.map("exp_sinh", x, progress=cb, progress_interval=0.01, batch_size=1000)
    assert len(calls) == 1
    # the runtime is still usable afterwards
    np.testing.assert_allclose(rt.map("exp_sinh", np.ones(3)), expected(1.0))


def test_progress_bar_on_stderr(rt, capfd):
    rt.map("exp_sinh", np.ones(1000), progress=True, desc="bar-test")
    err = capfd.readouterr().err
    assert "bar-test" in err and "1000/1000" in err


def test_ctrl_c_cancels_the_job(rt, sigint):
    # A map long enough to be interrupted: SIGINT arrives while it runs.
    x = np.ones(40_000_000)
    timer = threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        rt.map("pi_leibniz", rows=200_000, params={"terms": 20_000}, batch_size=64)
    timer.join()
    assert time.monotonic() - t0 < 10  # cancelled, not run to the end
    np.testing.assert_allclose(rt.map("exp_sinh", x[:5]), expected(1.0))


def test_gil_is_released_during_the_map(rt):
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    th = threading.Thread(target=ticker)
    th.start()
    rt.map("pi_leibniz", rows=64, params={"terms": 3_000_000}, batch_size=1)
    stop.set()
    th.join()
    assert len(ticks) > 5


def test_map_async_iterates_batches(rt):
    x = np.linspace(0, 1, 10000)
    job = rt.map_async("exp_sinh", x, batch_size=1000, window=4)
    seen = 0
    for b in job:
        assert isinstance(b, tandem.Batch) and b.status == 0
        np.testing.assert_allclose(b.outputs[0], expected(x[b.begin:b.end]))
        seen += b.end - b.begin
    assert seen == 10000
    y = job.result()
    np.testing.assert_allclose(y, expected(x))
    assert job.report()["items"] == 10000


def test_map_async_completion_order_and_cancel(rt):
    x = np.ones(100000)
    with rt.map_async("exp_sinh", x, batch_size=100, order="completion") as job:
        first = next(iter(job))
        assert first.end > first.begin
        job.cancel()
    with pytest.raises(tandem.CancelledError):
        job.result()
    with pytest.raises(ValueError):
        rt.map_async("exp_sinh", x, order="random")
    with pytest.raises(tandem.ShapeError):
        rt.map_async("axpy", x, np.ones(3), params={"a": 1.0})


def test_map_from_many_threads(rt):
    x = np.linspace(0, 1, 5000)
    ref = expected(x)
    errors = []

    def work():
        try:
            for _ in range(20):
                np.testing.assert_allclose(rt.map("exp_sinh", x), ref)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ths = [threading.Thread(target=work) for _ in range(4)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert not errors


def test_worker_processes_see_shared_arrays():
    with tandem.Runtime(threads=1, procs=2, backends="cpu,procs", sched_model_dir="off",
                        use_env=False) as rt:
        x = rt.empty(100_000, "f64", memory="shared")
        x[:] = np.linspace(0, 1, x.size)
        y, rep = rt.map("exp_sinh", x, policy="procs", report=True)
        np.testing.assert_allclose(y, expected(x))
        assert "shared" in tandem.tensor_of(y).memory
        assert any(w["backend"] == "procs" and w["items"] > 0 for w in rep["workers"])


def test_keep_on_device_returns_tensors(rt):
    # Without devices the outputs stay on the host, but the API is the same: Tensor handles
    # that chain into the next map and export on demand.
    x = np.linspace(0, 1, 100)
    y = rt.map("exp_sinh", x, keep_on_device=True)
    assert isinstance(y, tandem.Tensor) and y.shape == (100,) and y.dtype == "f64"
    z = rt.map("scale_shift", y, params={"scale": 2.0}, keep_on_device=True)
    np.testing.assert_allclose(z.numpy(), 2 * np.exp(x) * np.sinh(x))
    np.testing.assert_allclose(np.asarray(y), np.exp(x) * np.sinh(x))
    with pytest.raises(ValueError):
        rt.map_async("exp_sinh", x, keep_on_device=True)
