"""Kernel builds print nothing: a compiler warning in a kernel reaches every user's console
on a cold cache (clang's "1 warning generated." on stderr, pyopencl's CompilerWarning), so
every kernel file must build with an empty log, at its default defines and at the register
blocks the ops choose for 8 lanes and, where the device takes float16 (pip's PoCL 3.0 aborts
on float16 FMAs on AVX2 CPUs), 16 (gemm.cl's float16 blocking once warned "loop not unrolled"
on every cold build)."""
import json
import os
import re
import subprocess
import sys

import pytest

from clcnn.ops import conv2d, dense

KERNELS = os.path.join(os.path.dirname(__file__), "..", "kernels")

# The child builds each (file, defines) from source, with PoCL's own kernel cache off (a hit
# there skips the compiler, and with it the warnings), and prints the non-empty build logs.
_CHILD = r"""
import json, sys
import pyopencl as cl
import clcnn
from clcnn import device as d
dev = clcnn.get_device(sys.argv[1])
logs = {}
for filename, defines in json.loads(sys.argv[2]):
    options = d._build_options(filename) + d._define_options(defines)
    program = cl.Program(dev.context, d.program_source([filename])).build(options=options)
    log = program.get_build_info(dev.cl_device, cl.program_build_info.LOG).strip()
    if log:
        logs[f"{filename} {' '.join(options)}"] = log
print(json.dumps(logs))
"""


def _builds(device):
    files = sorted(f for f in os.listdir(KERNELS) if f.endswith(".cl"))
    builds = [(f, {}) for f in files]
    for vw in sorted({8, conv2d.vector_limits(device)[0]}):
        builds.append(("gemm.cl", {"TM": dense._TM[vw], "VW": vw, "NV": dense._NV[vw]}))
    return builds


def test_every_kernel_file_builds_without_warnings(device):
    if device.platform.name.strip() != "Portable Computing Language":
        pytest.skip("PoCL's kernel cache is turned off by POCL_KERNEL_CACHE; other drivers differ")
    env = dict(os.environ, POCL_KERNEL_CACHE="0")
    spec = os.environ.get("CLCNN_TEST_DEVICE", "cpu")
    done = subprocess.run([sys.executable, "-c", _CHILD, spec, json.dumps(_builds(device))], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = json.loads(done.stdout.strip().splitlines()[-1])
    assert logs == {}, "kernel builds with compiler output:\n" + "\n".join(f"{k}:\n{v}" for k, v in logs.items())
    # clang writes its warning count to stderr itself ("1 warning generated."); pyopencl warns
    # of a non-empty log
    assert not re.search(r"warnings? generated|CompilerWarning", done.stderr), done.stderr[-3000:]
