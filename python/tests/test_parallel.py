# SPDX-License-Identifier: MIT
"""rt.parallel: Python callables on tandem's worker processes (and threads)."""
import os
import signal
import threading
import time

import numpy as np
import pytest

import tandem
from tandem import _tandem
from tandem import parallel as par


@pytest.fixture(scope="module")
def prt():
    with tandem.Runtime(threads=1, procs=2, backends="cpu,procs", sched_model_dir="off",
                        use_env=False) as r:
        yield r


# The functions run in the workers: module level, so pickle sends them by reference.
def square(x):
    return x * x


def add(x, y, z=0):
    return x + y + z


def whoami(_):
    return os.getpid(), threading.current_thread() is threading.main_thread(), \
        _tandem._in_worker()


def addr_and_sum(i, a):
    return a.__array_interface__["data"][0], float(a.sum())


def row_addr(row, mark):
    row[:] = mark
    return row.__array_interface__["data"][0]


def write_item(i, out):
    out[i] = i * 2.0
    return None


class Boom(ValueError):
    pass


def raise_on_7(i):
    if i == 7:
        raise Boom(f"bad item {i}")
    return i


def kill_on(i, target, how, tries):
    if i == target and tries[0] < 1:
        tries[0] += 1
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif how == "exit":
            os._exit(3)
        elif how == "hang":
            time.sleep(3600)
    return i


def test_parallel_list_in_item_order(prt):
    assert prt.parallel(square, range(100)) == [i * i for i in range(100)]
    assert prt.parallel(square, 10) == [i * i for i in range(10)]
    assert prt.parallel(add, [1, 2, 3], 10) == [11, 12, 13]
    assert prt.parallel(add, ["a", "b"], "x", "y") == ["axy", "bxy"]
    assert prt.parallel(add, iter([1, 2]), 1, batch_size=1) == [2, 3]
    assert prt.parallel(square, []) == []


def test_parallel_runs_in_worker_processes(prt):
    out = prt.parallel(whoami, range(40), batch_size=1)
    pids = {p for p, _, _ in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    # the interpreter was re-initialised after the fork: this thread is the main one there
    assert all(main and ready for _, main, ready in out)
    assert not _tandem._in_worker()


def test_shared_arrays_pass_by_handle(prt):
    a = prt.zeros(1 << 17, "f64", memory="shared")
    a[:] = 1.0
    out = prt.parallel(addr_and_sum, range(8), a, batch_size=1)
    assert {p for p, _ in out} == {a.__array_interface__["data"][0]}  # the same bytes
    assert all(s == float(1 << 17) for _, s in out)
    # a view of a shared array is shared too; the workers' writes land in our memory
    out2 = prt.zeros(16, "f64", memory="shared")
    prt.parallel(write_item, range(16), out2[:], batch_size=4)
    np.testing.assert_array_equal(out2, np.arange(16) * 2.0)


def test_shared_array_items_are_views(prt):
    m = prt.zeros((6, 1000), "f64", memory="shared")
    addrs = prt.parallel(row_addr, m, 5.0, batch_size=2)
    base = m.__array_interface__["data"][0]
    assert addrs == [base + i * m.strides[0] for i in range(6)]
    assert (m == 5.0).all()


def test_large_private_array_moved_once(prt):
    big = np.ones(300_000)  # 2.4 MB > max_nbytes: shared once per call
    out = prt.parallel(addr_and_sum, range(6), big, batch_size=1)
    addrs = {p for p, _ in out}
    assert len(addrs) == 1 and addrs != {big.__array_interface__["data"][0]}
    assert all(s == 300_000.0 for _, s in out)
    small = np.ones(10)  # pickled with the call
    assert prt.parallel(addr_and_sum, range(2), small)[0][1] == 10.0
    # max_nbytes=None-like huge threshold: pickled by value, still correct
    out = prt.parallel(addr_and_sum, range(2), big, max_nbytes="1G")
    assert out[0][1] == 300_000.0


def test_exception_same_type_with_remote_traceback(prt):
    with pytest.raises(Boom) as ei:
        prt.parallel(raise_on_7, range(20), batch_size=3)
    e = ei.value
    assert "bad item 7" in str(e)
    assert isinstance(e.__cause__, par.RemoteTraceback)
    assert "raise Boom" in str(e.__cause__)
    assert e.tandem_item == 7
    if hasattr(e, "__notes__"):
        assert any("item 7" in n for n in e.__notes__)
    assert prt.parallel(square, range(3)) == [0, 1, 4]  # still usable


@pytest.mark.parametrize("how", ["kill", "exit"])
def test_worker_crash_raises_worker_error(prt, how):
    tries = prt.zeros(1, "i8", memory="shared")
    with pytest.raises(tandem.WorkerError) as ei:
        prt.parallel(kill_on, range(20), 5, how, tries, batch_size=2)
    e = ei.value
    assert e.begin <= 5 < e.end and e.batch is not None
    assert e.pid and e.pid != os.getpid()
    if how == "kill":
        assert e.signal == signal.SIGKILL and e.exit_status is None
    else:
        assert e.exit_status == 3 and e.signal is None and e.oom is None
    assert prt.parallel(square, range(5)) == [0, 1, 4, 9, 16]  # replaced worker


def test_retries_rerun_crashed_batch(prt):
    tries = prt.zeros(1, "i8", memory="shared")
    out = prt.parallel(kill_on, range(30), 11, "kill", tries, batch_size=4, retries=1)
    assert out == list(range(30)) and tries[0] == 1


def test_timeout_kills_only_the_stuck_worker(prt):
    before = {p for p, _, _ in prt.parallel(whoami, range(20), batch_size=1)}
    tries = prt.zeros(1, "i8", memory="shared")
    with pytest.raises(tandem.TimeoutError_) as ei:
        prt.parallel(kill_on, range(4), 2, "hang", tries, batch_size=1, timeout=0.5)
    assert ei.value.begin == 2 and ei.value.pid in before
    after = {p for p, _, _ in prt.parallel(whoami, range(20), batch_size=1)}
    assert ei.value.pid not in after
    assert len(before & after) >= 1  # the other worker lives on


def test_timeout_with_retry_succeeds(prt):
    tries = prt.zeros(1, "i8", memory="shared")
    out = prt.parallel(kill_on, range(4), 1, "hang", tries, batch_size=1, timeout=0.5,
                       retries=1)
    assert out == [0, 1, 2, 3]


def count_and_return(i, started):
    started[0] += 1  # (a race between two workers only undercounts)
    return i


def test_generators_order_and_bounded_window(prt):
    g = prt.parallel(square, range(50), return_as="generator", batch_size=3)
    assert not isinstance(g, list) and list(g) == [i * i for i in range(50)]
    g = prt.parallel(square, range(50), return_as="generator_unordered", batch_size=3)
    assert sorted(g) == [i * i for i in range(50)]
    started = prt.zeros(1, "i8", memory="shared")
    g = prt.parallel(count_and_return, range(100), started, return_as="generator",
                     batch_size=1, max_in_flight=3)
    assert next(g) == 0
    deadline = time.monotonic() + 5
    while started[0] < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    # one consumed + at most 3 in flight: the workers never run ahead of the window
    assert 2 <= started[0] <= 4
    g.close()


def test_lambda_needs_cloudpickle(prt, monkeypatch):
    if par._cloud_pickler() is not None:  # cloudpickle, or joblib's copy, is importable here
        assert prt.parallel(lambda x: x + 1, range(3)) == [1, 2, 3]
        k = 5
        assert prt.parallel(lambda x: x * k, range(3)) == [0, 5, 10]
    monkeypatch.setattr(par, "_cloud_pickler", lambda: None)
    with pytest.raises(TypeError, match="cloudpickle"):
        prt.parallel(lambda x: x, range(3))


def test_threads_backend_runs_unpickled(rt):
    lock = threading.Lock()
    seen = set()

    def f(x, scale):  # a closure: never pickled on the threads backend
        with lock:
            seen.add(threading.get_ident())
        return x * scale

    assert rt.parallel(f, range(200), 3, backend="threads", batch_size=5) == \
        [3 * i for i in range(200)]
    assert threading.get_ident() not in seen
    with pytest.raises(Boom):
        rt.parallel(raise_on_7, range(10), backend="threads")
    g = rt.parallel(f, range(10), 2, backend="threads", return_as="generator")
    assert list(g) == [2 * i for i in range(10)]


def sleep_item(i):
    time.sleep(0.05)
    return i


def test_gil_released_while_waiting(prt):
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.005)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        assert prt.parallel(sleep_item, range(20), batch_size=1) == list(range(20))
    finally:
        stop.set()
        t.join()
    assert len(ticks) > 5


def test_bad_options(prt, rt):
    with pytest.raises(ValueError):
        prt.parallel(square, range(3), return_as="dict")
    with pytest.raises(ValueError):
        prt.parallel(square, range(3), backend="gpu")
    with pytest.raises(ValueError):
        prt.parallel(square, range(3), batch_size=0)
    with pytest.raises(ValueError, match="procs"):
        rt.parallel(square, range(3))  # no worker processes
    with pytest.raises(ValueError):
        prt.parallel(square, range(3), retries=-1)


def big_result(i):
    return np.full(300_000, float(i))  # 2.4 MB: over the slot, through /dev/shm


def test_results_bigger_than_slot(prt):
    before = set(os.listdir("/dev/shm"))
    out = prt.parallel(big_result, range(4), batch_size=1, slot_bytes="64K")
    assert [float(a[0]) for a in out] == [0.0, 1.0, 2.0, 3.0]
    leftovers = [f for f in set(os.listdir("/dev/shm")) - before if "tandem-result" in f]
    assert leftovers == []


def test_worker_cannot_import_fn(prt, tmp_path, monkeypatch):
    # a module the parent imports after the workers were forked, from a path they lack
    (tmp_path / "tdm_late_mod.py").write_text("def f(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import tdm_late_mod
    with pytest.raises(ModuleNotFoundError) as ei:
        prt.parallel(tdm_late_mod.f, range(4))
    assert "while unpickling" in str(ei.value.__cause__)
    assert prt.parallel(square, range(3)) == [0, 1, 4]


class OddError(Exception):
    def __init__(self, a, b):  # pickle cannot rebuild it from its args
        super().__init__(f"{a}/{b}")


def raise_odd(i):
    raise OddError(i, "x")


def test_unpicklable_exception_comes_back_as_text(prt):
    with pytest.raises(RuntimeError, match="OddError: 0/x"):
        prt.parallel(raise_odd, range(2), batch_size=1)


def test_dropped_generators_leave_no_result_files(prt):
    import gc
    before = {f for f in os.listdir("/dev/shm") if "tandem-result" in f}
    g = prt.parallel(big_result, range(12), batch_size=1, slot_bytes="64K",
                     return_as="generator", max_in_flight=4)
    assert float(next(g)[0]) == 0.0
    del g  # results of finished, unread batches were in files
    g2 = prt.parallel(big_result, range(12), batch_size=1, slot_bytes="64K",
                      return_as="generator_unordered", max_in_flight=4)
    time.sleep(0.3)  # (not needed for the check: only gives batches time to finish)
    del g2  # never started
    gc.collect()
    after = {f for f in os.listdir("/dev/shm") if "tandem-result" in f}
    assert after - before == set()
    assert prt.parallel(square, range(3)) == [0, 1, 4]


def sleep_count(i, done):
    time.sleep(0.02)
    done[0] += 1  # (races between the two workers only undercount)
    return i


def test_ctrl_c_cancels_the_call(prt, sigint):
    done = prt.zeros(1, "i8", memory="shared")
    t = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            prt.parallel(sleep_count, range(1000), done, batch_size=1)
    finally:
        t.cancel()
    ran = int(done[0])
    assert 0 < ran < 1000  # stopped early: no new batch after the interrupt
    time.sleep(0.1)
    assert int(done[0]) == ran  # and nothing runs on after the call returned
    assert prt.parallel(square, range(3)) == [0, 1, 4]
