import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import settings

import clcnn

# CI runs a bounded number of examples (16: the kernel tests compile kernels for every drawn
# shape, and the suite must stay near 20 minutes on a 2-core machine); CLCNN_HYPOTHESIS_EXAMPLES
# raises it for deeper fuzzing (the previous default, 25, is a good nightly value).
settings.register_profile("clcnn", max_examples=int(os.environ.get("CLCNN_HYPOTHESIS_EXAMPLES", "16")),
                          deadline=None, derandomize=False, print_blob=True)
settings.load_profile("clcnn")

# Tuning choices and program binaries made by the tests go to a throw-away folder, not the
# user's ~/.cache/clcnn. The process that makes it (pytest-xdist's controller: its workers
# inherit the variable) removes it at exit: a run leaves ~100 MB of binaries there.
if "CLCNN_CACHE_DIR" not in os.environ:
    os.environ["CLCNN_CACHE_DIR"] = tempfile.mkdtemp(prefix="clcnn-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CLCNN_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def device():
    return clcnn.get_device(os.environ.get("CLCNN_TEST_DEVICE", "cpu"))


@pytest.fixture(autouse=True)
def fresh_conv_routes():
    """conv2d_forward keeps the launches a call signature was routed to (ops.conv2d._ROUTES);
    tests that patch the routing's internals (vector widths, chunk sizes, padding) must not
    meet a route an earlier test made under other values."""
    from clcnn.ops import conv2d
    conv2d._ROUTES.clear()
    yield
