import os
import tempfile

import numpy as np
import pytest
from hypothesis import settings

import clcnn

# CI runs a bounded number of examples; CLCNN_HYPOTHESIS_EXAMPLES raises it for deeper fuzzing.
settings.register_profile("clcnn", max_examples=int(os.environ.get("CLCNN_HYPOTHESIS_EXAMPLES", "25")),
                          deadline=None, derandomize=False, print_blob=True)
settings.load_profile("clcnn")

# Tuning choices made by the tests go to a throw-away folder, not the user's ~/.cache/clcnn.
os.environ.setdefault("CLCNN_CACHE_DIR", tempfile.mkdtemp(prefix="clcnn-test-cache-"))


@pytest.fixture(scope="session")
def device():
    return clcnn.get_device(os.environ.get("CLCNN_TEST_DEVICE", "cpu"))
