# SPDX-License-Identifier: MIT
import pytest

import tandem


@pytest.fixture
def rt():
    # Two threads, no worker processes, CPU only and no scheduler model on disk: quick to open
    # and independent of the machine's devices. Tests that need more open their own.
    with tandem.Runtime(threads=2, backends="cpu", sched_model_dir="off", use_env=False) as r:
        yield r
