# SPDX-License-Identifier: MIT
import os

import numpy as np
import pytest

import tandem

SAXPB = """
TDM_DEVICE_FN void saxpb(tdm_idx i, TDM_GLOBAL const double *x, TDM_GLOBAL double *y,
                         double a, double b)
{
    y[i] = a * x[i] + b;
}
"""


@pytest.fixture(autouse=True)
def kernel_cache(tmp_path_factory, monkeypatch):
    d = tmp_path_factory.mktemp("kcache")
    monkeypatch.setenv("TANDEM_KERNEL_CACHE", str(d))
    return d


def test_user_kernel_runs_on_threads(rt, kernel_cache):
    k = tandem.kernel("saxpb", SAXPB, inputs=[("x", "f64")], outputs=[("y", "f64")],
                      params=[("a", "f64"), ("b", "f64")])
    assert k.so_path.startswith(str(kernel_cache)) and os.path.exists(k.so_path)
    x = np.arange(10000.0).reshape(100, 100)
    y = rt.map(k, x, params={"a": 2.0, "b": 1.0}, batch_size=7)
    np.testing.assert_array_equal(y, 2 * x + 1)
    assert "saxpb" in rt.kernels()
    # by name once registered; same definition again: the same kernel, compiled once
    y2 = rt.map("saxpb", x, params={"a": 1.0, "b": 0.0})
    np.testing.assert_array_equal(y2, x)
    assert tandem.kernel("saxpb", SAXPB, inputs=[("x", "f64")], outputs=[("y", "f64")],
                         params=[("a", "f64"), ("b", "f64")]) is k


def test_user_kernel_checks_its_arguments(rt):
    k = tandem.kernel("twice_f32", """
TDM_DEVICE_FN void twice_f32(tdm_idx i, TDM_GLOBAL const float *x, TDM_GLOBAL const float *z,
                             TDM_GLOBAL float *y)
{
    y[i] = 2.0f * x[i] + z[i];
}
""", inputs=[("x", np.float32), ("z", "float32")], outputs=[("y", "f32")])
    x = np.ones(50, np.float32)
    np.testing.assert_array_equal(rt.map(k, x, x), 3)
    with pytest.raises(tandem.DTypeError, match="twice_f32: input 0"):
        rt.map(k, np.ones(50), x, out=np.empty(50, np.float32))
    with pytest.raises(tandem.ShapeError):
        rt.map(k, np.ones((5, 10), np.float32), np.ones((5, 9), np.float32),
               out=np.empty((5, 10), np.float32))
    with pytest.raises(TypeError, match="unknown field"):
        rt.map(k, x, x, params={"a": 1})


def test_compile_errors_and_bad_definitions():
    with pytest.raises(tandem.KernelError, match="compiler failed"):
        tandem.kernel("broken", "this is not C;", inputs=[("x", "f64")], outputs=[("y", "f64")])
    with pytest.raises(ValueError):
        tandem.kernel("9bad", SAXPB, inputs=[("x", "f64")], outputs=[("y", "f64")])
    with pytest.raises(ValueError):
        tandem.kernel("noout", SAXPB, inputs=[("x", "f64")])
    with pytest.raises(tandem.DTypeError):
        tandem.kernel("c128", SAXPB, inputs=[("x", "complex128")], outputs=[("y", "f64")])
    with pytest.raises(TypeError):
        tandem.kernel("strs", SAXPB, inputs=["x"], outputs=[("y", "f64")])
    tandem.kernel("same_name", "TDM_DEVICE_FN void same_name(tdm_idx i, TDM_GLOBAL double *y)"
                  " { y[i] = 1.0; }", outputs=[("y", "f64")])
    with pytest.raises(tandem.ExistsError):
        tandem.kernel("same_name", "TDM_DEVICE_FN void same_name(tdm_idx i, TDM_GLOBAL double *y)"
                      " { y[i] = 2.0; }", outputs=[("y", "f64")])


def test_kernel_without_inputs(rt):
    k = tandem.kernel("iota", "TDM_DEVICE_FN void iota(tdm_idx i, TDM_GLOBAL tdm_i64 *y)"
                      " { y[i] = 7; }", outputs=[("y", "i64")])
    y = rt.map(k, rows=10)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, 7)


def test_kernel_defined_before_open_runs_on_worker_processes():
    k = tandem.kernel("plus1", "TDM_DEVICE_FN void plus1(tdm_idx i, TDM_GLOBAL const double *x,"
                      " TDM_GLOBAL double *y) { y[i] = x[i] + 1.0; }",
                      inputs=[("x", "f64")], outputs=[("y", "f64")])
    with tandem.Runtime(threads=1, procs=1, backends="cpu,procs", sched_model_dir="off",
                        use_env=False) as rt:
        x = rt.zeros(1000, "f64", memory="shared")
        y, rep = rt.map(k, x, policy="procs", report=True)
        np.testing.assert_array_equal(y, 1.0)
        assert any(w["backend"] == "procs" and w["items"] == 1000 for w in rep["workers"])


def test_kernel_defined_after_open_is_refused_on_worker_processes():
    with tandem.Runtime(threads=1, procs=1, backends="cpu,procs", sched_model_dir="off",
                        use_env=False) as rt:
        k = tandem.kernel("late", "TDM_DEVICE_FN void late(tdm_idx i, TDM_GLOBAL double *y)"
                          " { y[i] = 3.0; }", outputs=[("y", "f64")])
        with pytest.raises(tandem.InvalidArgument, match="before opening"):
            rt.map(k, rows=10)
        np.testing.assert_array_equal(rt.map(k, rows=10, policy="threads"), 3.0)


def test_user_kernel_runs_on_an_opencl_device():
    k = tandem.kernel("saxpb_f32", """
TDM_DEVICE_FN void saxpb_f32(tdm_idx i, TDM_GLOBAL const float *x, TDM_GLOBAL float *y,
                             float a, float b)
{
    y[i] = a * x[i] + b;
}
""", inputs=[("x", "f32")], outputs=[("y", "f32")], params=[("a", "f32"), ("b", "f32")])
    with tandem.Runtime(threads=1, backends="cpu,opencl", sched_model_dir="off",
                        use_env=False) as rt:
        if not any(d["backend"] == "opencl" for d in rt.devices()):
            pytest.skip("no OpenCL device")
        x = np.arange(20000, dtype=np.float32).reshape(200, 100)
        y, rep = rt.map(k, x, params={"a": 2.0, "b": 1.0}, policy="opencl", report=True)
        np.testing.assert_allclose(y, 2 * x + 1)
        assert [w["backend"] for w in rep["workers"] if w["items"]] == ["opencl"]


LOOP = """
TDM_DEVICE_FN void loop_n(tdm_idx i, TDM_GLOBAL double *y, tdm_i64 n)
{
    double s = 0.0;
    for (tdm_i64 k = 0; k < n; k++)
        s += 1.0 / (double)(2 * k + 1);
    y[i] = s;
}
"""


def _model_keys(d):
    keys = set()
    for f in os.listdir(d):
        if f.startswith("costmodel-"):
            with open(os.path.join(d, f)) as fh:
                for line in fh:
                    parts = line.split("\t")
                    if len(parts) > 2 and parts[1] == "cpu":
                        keys.add(parts[0])
    return keys


def test_kernel_work_keeps_the_model_apart_per_work(tmp_path):
    """work= names the param that is an item's work: the stored model keeps the kernel's
    figures per power of 2 of it (".w<k>"), so maps of 1000 and 64000 iterations each have
    their own; a kernel without it has one entry for all."""
    with pytest.raises(ValueError, match="not one of the kernel's params"):
        tandem.kernel("loop_bad", LOOP.replace("loop_n", "loop_bad"), outputs=[("y", "f64")],
                      params=[("n", "i64")], work="m")
    k = tandem.kernel("loop_n", LOOP, outputs=[("y", "f64")], params=[("n", "i64")], work="n")
    assert k.work == "n" and "loop_n_work" in k.c_source
    plain = tandem.kernel("loop_p", LOOP.replace("loop_n", "loop_p"), outputs=[("y", "f64")],
                          params=[("n", "i64")])
    assert plain.work is None and "loop_p_work" not in plain.c_source
    with tandem.Runtime(threads=2, backends="cpu", sched_model_dir=str(tmp_path),
                        use_env=False) as rt:
        for n, rows in ((1000, 8192), (64000, 256)):
            y = rt.map(k, rows=rows, params={"n": n})
            assert y[0] == pytest.approx(sum(1.0 / (2 * j + 1) for j in range(n)))
            del y  # (the runtime closes, and saves its model, once no tensor is alive)
            rt.map(plain, rows=rows, params={"n": n})
    keys = _model_keys(tmp_path)
    assert {"loop_n.v1.w10", "loop_n.v1.w16"} <= keys, keys
    assert "loop_n.v1" not in keys
    assert "loop_p.v1" in keys and not any(x.startswith("loop_p.v1.w") for x in keys)
