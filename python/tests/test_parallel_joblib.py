# SPDX-License-Identifier: MIT
"""The joblib backend (import tandem.joblib) and tandem.Parallel / tandem.delayed."""
import os

import numpy as np
import pytest

import tandem

joblib = pytest.importorskip("joblib")
import tandem.joblib  # noqa: E402,F401  (registers "tandem")
from tandem import parallel as par  # noqa: E402


def addr_sum(i, payload):
    return i, payload.__array_interface__["data"][0], float(payload[::1000].sum()), os.getpid()


def fail_on_3(i):
    if i == 3:
        raise KeyError(f"item {i}")
    return i


def test_joblib_backend_runs_on_tandem_workers():
    payload = np.ones(2_000_000)  # 16 MB: shared once per Parallel call, never pickled per task
    with joblib.parallel_backend("tandem", n_jobs=2):
        out = joblib.Parallel()(joblib.delayed(addr_sum)(i, payload) for i in range(40))
    assert [o[0] for o in out] == list(range(40))
    assert all(o[2] == 2000.0 for o in out)
    addrs = {o[1] for o in out}
    assert len(addrs) == 1 and addrs != {payload.__array_interface__["data"][0]}
    pids = {o[3] for o in out}
    assert os.getpid() not in pids
    rt = par._runtimes[2]
    assert rt.procs == 2


def test_joblib_backend_shared_array_zero_copy():
    rt = par._runtime_for(2)
    payload = rt.zeros(1 << 16, "f64", memory="shared")
    with joblib.parallel_backend("tandem", n_jobs=2):
        out = joblib.Parallel(batch_size=4)(joblib.delayed(addr_sum)(i, payload)
                                            for i in range(16))
    assert {o[1] for o in out} == {payload.__array_interface__["data"][0]}


def test_joblib_backend_reraises_task_exception():
    with joblib.parallel_backend("tandem", n_jobs=2):
        with pytest.raises(KeyError):
            joblib.Parallel()(joblib.delayed(fail_on_3)(i) for i in range(10))
        # the backend stays usable
        assert joblib.Parallel()(joblib.delayed(fail_on_3)(i) for i in range(3)) == [0, 1, 2]


def test_joblib_backend_sharedmem_falls_back_to_threads():
    # joblib runs require="sharedmem" on its thread backend: the tasks run in this process
    with joblib.parallel_backend("tandem", n_jobs=2):
        out = joblib.Parallel(require="sharedmem")(joblib.delayed(os.getpid)() for _ in range(3))
    assert out == [os.getpid()] * 3


def test_tandem_parallel_delayed_aliases():
    payload = np.arange(10.0)
    out = tandem.Parallel(n_jobs=2)(tandem.delayed(addr_sum)(i, payload) for i in range(12))
    assert [o[0] for o in out] == list(range(12)) and all(o[2] == 0.0 for o in out)
    g = tandem.Parallel(n_jobs=2, return_as="generator")(
        tandem.delayed(pow)(i, 2) for i in range(20))
    assert list(g) == [i * i for i in range(20)]
    out = tandem.Parallel(backend="threads")(tandem.delayed(lambda x: x + 1)(i) for i in range(5))
    assert out == [1, 2, 3, 4, 5]
    assert tandem.delayed(pow)(2, 3) == (pow, (2, 3), {})


@pytest.mark.skipif(tuple(int(x) for x in joblib.__version__.split(".")[:2]) < (1, 3),
                    reason="Parallel(return_as=...) is joblib >= 1.3")
@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_joblib_backend_return_as(return_as):
    try:
        p = joblib.Parallel(return_as=return_as)
    except (TypeError, ValueError):
        pytest.skip(f"this joblib has no return_as={return_as!r}")
    with joblib.parallel_backend("tandem", n_jobs=2):
        g = p(joblib.delayed(pow)(i, 2) for i in range(30))
        assert not isinstance(g, list)
        out = list(g)
    assert sorted(out) == [i * i for i in range(30)]
    if return_as == "generator":
        assert out == [i * i for i in range(30)]
