# SPDX-License-Identifier: MIT
import signal

import pytest

import tandem


@pytest.fixture
def sigint():
    # Python raises KeyboardInterrupt on SIGINT only when it installed its handler, which it
    # does not when SIGINT was ignored at start (a program started in the background by a
    # non-interactive shell, as CI may be): the Ctrl-C tests install it themselves.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture
def rt():
    # Two threads, no worker processes, CPU only and no scheduler model on disk: quick to open
    # and independent of the machine's devices. Tests that need more open their own.
    with tandem.Runtime(threads=2, backends="cpu", sched_model_dir="off", use_env=False) as r:
        yield r
