# SPDX-License-Identifier: MIT
import gc
import weakref

import numpy as np
import pytest

import tandem


def test_info_is_a_dict_of_the_build_and_machine():
    info = tandem.info()
    assert info["version"] == tandem.__version__
    assert info["threads"] >= 1
    assert info["system"]["online_cores"] >= 1
    names = [b["name"] for b in info["backends"]]
    assert "cpu" in names
    assert "exp_sinh" in info["kernels"]
    assert info["devices"][0]["backend"] == "cpu"


def test_runtime_config_and_queries(rt):
    assert rt.threads == 2
    assert not rt.closed
    devs = rt.devices()
    assert devs and devs[0]["backend"] == "cpu"
    assert "axpy" in rt.kernels()
    assert "enabled" in rt.backends()[0]
    assert rt.shm_info()["allowed_bytes"] > 0
    assert "threads=2" in repr(rt)


def test_backends_as_list():
    with tandem.Runtime(threads=1, backends=["cpu"], use_env=False) as rt:
        enabled = [b["name"] for b in rt.backends() if b["enabled"]]
        assert enabled == ["cpu"]


def test_bad_config_raises_value_errors():
    with pytest.raises(ValueError):
        tandem.Runtime(threads=-1)
    with pytest.raises(tandem.InvalidArgument) as e:
        tandem.Runtime(backends="no_such_backend", use_env=False)
    assert e.value.code == -1 and e.value.status == "TDM_EINVAL"
    assert isinstance(e.value, ValueError)
    with pytest.raises(TypeError):
        tandem.Runtime(debug="yes")
    with pytest.raises(TypeError):
        tandem.Runtime(nonsense=1)


def test_closed_runtime_refuses_work():
    rt = tandem.Runtime(threads=1, use_env=False)
    rt.close()
    assert rt.closed
    assert "closed" in repr(rt)
    with pytest.raises(tandem.Error, match="closed"):
        rt.empty(3)
    with pytest.raises(tandem.Error):
        rt.map("exp_sinh", np.zeros(3))
    rt.close()  # twice is fine


def test_arrays_outlive_the_with_block():
    with tandem.Runtime(threads=1, use_env=False) as rt:
        x = rt.zeros((4, 3), "f32", memory="shared")
        ref = weakref.ref(rt)
    del rt
    gc.collect()
    # The runtime is closed for new work but its memory stays valid under the array.
    x += 1
    assert x.sum() == 12
    assert ref() is not None
    del x
    gc.collect()
    assert ref() is None  # the last array freed it


def test_error_classes_carry_codes():
    assert issubclass(tandem.ShapeError, tandem.Error)
    assert issubclass(tandem.ShapeError, ValueError)
    assert issubclass(tandem.DTypeError, TypeError)
    assert issubclass(tandem.IOError_, OSError)
    assert issubclass(tandem.NotFoundError, LookupError)
    assert tandem.strerror(-8) == ("TDM_ESHAPE", "shape mismatch")


def test_trace_file_written_at_close(tmp_path):
    p = tmp_path / "trace.json"
    with tandem.Runtime(threads=1, trace=str(p), use_env=False) as rt:
        rt.map("exp_sinh", np.ones(1000))
    import json
    events = json.loads(p.read_text())
    assert events  # Chrome trace events of the batch


def test_procs_runtime_outputs_are_shared():
    with tandem.Runtime(threads=1, procs=1, backends="cpu,procs", use_env=False,
                        sched_model_dir="off") as rt:
        y = rt.map("exp_sinh", np.ones(10))
        assert "shared" in tandem.tensor_of(y).memory
        with pytest.raises(tandem.InvalidArgument, match="shared memory"):
            rt.map("sum", np.ones((3, 4)), policy="procs")  # private memory: not for procs
        assert rt.map("sum", rt.share(np.ones((3, 4))), policy="procs").tolist() == [4.0] * 3


def test_init_twice_and_repr_of_tensor(rt):
    with pytest.raises(RuntimeError):
        rt.__init__(threads=1)
    t = tandem.tensor_of(rt.zeros((2, 3), "i32", memory="shared"))
    assert repr(t) == "tandem.Tensor(shape=(2, 3), dtype='i32', memory='shared')"
    assert t.shape == (2, 3) and t.dtype == "i32" and not t.on_device


def test_cache_and_job_keep_the_runtime_until_they_go(tmp_path):
    rt = tandem.Runtime(threads=1, use_env=False)
    cache = tandem.Cache(tmp_path / "c", rt=rt)
    job = rt.map_async("exp_sinh", np.ones(1000), batch_size=100)
    rt.close()  # deferred: the cache and the job still use it
    assert rt.closed
    assert job.result().shape == (1000,)  # a started job runs to its end
    with pytest.raises(tandem.Error, match="closed"):
        cache.map("exp_sinh", np.ones(10))  # but nothing new starts
    with pytest.raises(tandem.Error, match="closed"):
        rt.map("exp_sinh", np.ones(3))
    cache.close()
    del job
