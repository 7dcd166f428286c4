"""OpenCL device discovery and choice, and the one place that builds programs.

Nothing above this module touches pyopencl contexts, queues or programs directly: layers and
ops ask a `Device` for kernels (built once per source file and set of -D defines, then cached)
and allocate their arrays from its memory pool.
"""
import atexit
import contextlib
import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from importlib import resources

import numpy as np
import pyopencl as cl
import pyopencl.array as cl_array
import pyopencl.tools as cl_tools

from .errors import DeviceError, DeviceOutOfMemory, KernelBuildError

_KERNEL_PACKAGE = "clcnn.kernels"


# PoCL's CPU driver starts one worker thread per core when its devices are first listed, and a
# kernel's work-groups are shared among them. Left unpinned, the worker that finishes a kernel
# queues the next and wakes the other, and Linux tends to run the woken thread on the waker's
# core, so a kernel queued behind another often ran on one core: two back-to-back launches of a
# kernel of 64-1024 work-groups (PoCL 3.0, 2-core AVX-512 VM) took 1.6-1.9x the time of one
# launched alone, where pinned workers (PoCL's POCL_AFFINITY=1: worker i on CPU i) ran both
# alike. LeNet-5 training steps at batch 64: 1.11-1.28x faster pinned (5 alternating process
# pairs), inference 1.03-1.31x, batch 256 even (its kernels are long enough for the woken
# worker to catch up).
@contextlib.contextmanager
def _pinned_pocl_workers():
    """POCL_AFFINITY=1 while PoCL starts its workers (set for that moment only: a child such as
    an MPI rank bound to fewer CPUs must not inherit a pinning it cannot honour); only where
    this process may run on every CPU 0..n-1 (PoCL pins worker i to CPU i), no setting asks PoCL
    for fewer workers (as MPI ranks given one core each: every process would pin its workers to
    the same first CPUs), and never over the user's own POCL_AFFINITY (0 turns it off). Yields
    a list that holds, after the block, the threads started pinned in it (for _unpin)."""
    started = []
    try:
        cpus = os.sched_getaffinity(0)
        everywhere = cpus == set(range(os.cpu_count() or 0))
    except (AttributeError, OSError):
        everywhere = False
    fewer_workers = any(os.environ.get(name) for name in ("POCL_MAX_PTHREAD_COUNT", "POCL_CPU_MAX_CU_COUNT"))
    if "POCL_AFFINITY" in os.environ or not everywhere or fewer_workers:
        yield started
        return
    before = _threads()
    os.environ["POCL_AFFINITY"] = "1"
    try:
        yield started
    finally:
        os.environ.pop("POCL_AFFINITY", None)
        for thread in _threads() - before:
            try:
                if len(os.sched_getaffinity(thread)) == 1:
                    started.append(thread)
            except OSError:     # a thread that has ended since
                pass


def _threads():
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _unpin(threads):
    """Give the threads every CPU of the process again: PoCL started fewer workers than CPUs
    (a count of cores, not of hardware threads, say), and pinned they would leave CPUs idle
    and crowd others when processes share the machine."""
    cpus = os.sched_getaffinity(0)
    for thread in threads:
        try:
            os.sched_setaffinity(thread, cpus)
        except OSError:
            pass


def _all_devices():
    found = []
    # PoCL starts its workers when its devices are listed, or, with a second OpenCL library
    # installed beside it (pip's PoCL and Debian's), when the ICD loader lists the platforms.
    with _pinned_pocl_workers() as pinned:
        try:
            platforms = cl.get_platforms()
        except cl.Error:
            # pyopencl raises PLATFORM_NOT_FOUND_KHR when no ICD is installed at all.
            platforms = []
        for p_index, platform in enumerate(platforms):
            try:
                devices = platform.get_devices()
            except cl.Error:
                continue
            for d_index, device in enumerate(devices):
                found.append((f"{p_index}:{d_index}", platform, device))
    if pinned and not _one_worker_per_cpu(found, len(os.sched_getaffinity(0))):
        _unpin(pinned)
    return found


def _one_worker_per_cpu(found, cpus):
    """Whether every PoCL CPU device among `found` runs as many workers (compute units) as the
    process has CPUs: only then is PoCL's worker i on CPU i a fair spread."""
    return all(device.max_compute_units == cpus for _, platform, device in found
               if "portable computing language" in platform.name.lower()
               and device.type & cl.device_type.CPU)


def _type_name(device):
    kind = device.type
    if kind & cl.device_type.GPU:
        return "GPU"
    if kind & cl.device_type.CPU:
        return "CPU"
    if kind & cl.device_type.ACCELERATOR:
        return "ACCELERATOR"
    return "OTHER"


def list_devices():
    """Every OpenCL device: [(index "P:D", platform name, device name, type), ...]."""
    return [(index, p.name.strip(), d.name.strip(), _type_name(d)) for index, p, d in _all_devices()]


def _matches(spec, index, platform, device):
    spec_l = spec.lower()
    type_name = _type_name(device).lower()
    if spec_l == index:
        return True
    if spec_l in ("cpu", "gpu", "accelerator"):
        return spec_l == type_name
    if spec_l == "pocl":
        return "portable computing language" in platform.name.lower() or "pocl" in platform.name.lower()
    haystack = f"{platform.name} {platform.vendor} {device.name} {device.vendor}".lower()
    return spec_l in haystack


def _score(platform, device):
    # A GPU before a CPU; among PoCL platforms prefer the newer driver (faster, wider vectors).
    kind = _type_name(device)
    rank = {"GPU": 2, "ACCELERATOR": 1}.get(kind, 0)
    return (rank, platform.version, device.max_compute_units)


def get_device(spec=None, profiling=False):
    """Return a `Device` for `spec`, else $CLCNN_DEVICE, else the best available (GPU first).

    spec: a `Device` (returned as is), "pocl", "cpu", "gpu", a vendor such as "nvidia",
    a platform:device index such as "0:1", or any substring of the platform or device name.
    """
    if isinstance(spec, Device):
        return spec
    spec = spec if spec is not None else os.environ.get("CLCNN_DEVICE") or None
    devices = _all_devices()
    if not devices:
        raise DeviceError(
            "no OpenCL device found; install a CPU OpenCL driver with "
            "'pip install \"pyopencl[pocl]\"' (or a GPU vendor's OpenCL driver)")
    if spec is None:
        candidates = devices
    else:
        spec = str(spec).strip()
        candidates = [entry for entry in devices if _matches(spec, *entry)]
        if not candidates:
            listing = "; ".join(f"{i} {p} / {d} ({t})" for i, p, d, t in list_devices())
            raise DeviceError(f"no OpenCL device matches {spec!r}; devices found: {listing}")
    index, platform, device = max(candidates, key=lambda entry: _score(entry[1], entry[2]))
    key = (index, bool(profiling))
    if key not in _OPEN_DEVICES:
        _OPEN_DEVICES[key] = Device(index, platform, device, profiling=profiling)
    return _OPEN_DEVICES[key]


_OPEN_DEVICES = {}


def device_of(array):
    """The clcnn Device whose context holds a pyopencl array."""
    for device in _OPEN_DEVICES.values():
        if device.context == array.context:
            return device
    raise ValueError("the array is not on a device that clcnn opened")


def _read_kernel_source(filename):
    try:
        return resources.files(_KERNEL_PACKAGE).joinpath(filename).read_text()
    except (FileNotFoundError, OSError) as exc:
        raise KernelBuildError(f"kernel source {filename!r} not found in {_KERNEL_PACKAGE}: {exc}") from exc


# Status codes that mean "the device ran out of memory": the first two are worth a retry after
# the pool gives its cached blocks back; a buffer above the device's maximum allocation never fits.
_OOM_CODES = (cl.status_code.MEM_OBJECT_ALLOCATION_FAILURE, cl.status_code.OUT_OF_RESOURCES)
_TOO_BIG_CODE = cl.status_code.INVALID_BUFFER_SIZE


def _error_code(exc):
    try:
        return exc.code
    except Exception:   # a cl.Error built without an error record
        return None


def is_out_of_memory(exc):
    """True for a pyopencl error that says the device is out of memory or resources."""
    return isinstance(exc, cl.Error) and _error_code(exc) in _OOM_CODES + (_TOO_BIG_CODE,)


def _megabytes(nbytes):
    return f"{nbytes / 2**20:,.1f} MiB"


def _binary_cache_dir():
    """programs/ under $CLCNN_CACHE_DIR (where tuning.json lives too), else under
    $XDG_CACHE_HOME/clcnn or ~/.cache/clcnn; None when CLCNN_NO_CACHE is set."""
    if os.environ.get("CLCNN_NO_CACHE", "").strip() not in ("", "0"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.environ.get("CLCNN_CACHE_DIR") or os.path.join(base, "clcnn"), "programs")


ACTIVATION_CODES = {None: 0, "relu": 1, "leaky_relu": 2, "tanh": 3, "sigmoid": 4, "relu6": 5}

# Every program is built to flush float32 denormals to zero. Gradients that die away through
# saturated tanh units, and momentum decaying towards zero, reach the denormal range in real
# training, and x86 cores take a microcode assist on each denormal operand: PoCL's kernels
# then ran 6x (values near 1e-36) to 130x (1e-40) slower (LeNet-5 conv2's input gradient,
# 0.34 ms -> 46 ms), while PoCL with this option sets the flush-to-zero modes and keeps
# 0.34 ms. Values below 1.2e-38 carry nothing a float32 network can use; GPUs flush them too.
BUILD_OPTIONS = ("-cl-denorms-are-zero",)
# Files built without it: max pooling and Clip select by comparison, and flushed denormals
# would tie (max pooling's argmax would differ from PyTorch's) or vanish (Clip to a denormal
# bound gave 0); pooling and the elementwise ops do too little arithmetic per element for the
# flush to matter to their speed.
EXACT_DENORMAL_FILES = frozenset({"pool.cl", "elementwise.cl"})


# Define-free programs that every training step uses, built as one: PoCL spends ~0.3 s on each
# build before it compiles a single kernel (its compiler's start-up and builtin library; an
# empty program costs as much), and a cold start of `clcnn train lenet5` built these four
# separately. One build of the four sources together took 0.8 s against 2.1 s for the four.
# Their kernel, helper and macro names are distinct, so the sources concatenate as they are
# (tests/test_device.py builds the bundle and finds every kernel of each file in it).
BUNDLE = ("data.cl", "loss.cl", "optim.cl", "activation.cl")


def program_source(files):
    """The source of one program made of kernels/<files>. common.h (activation codes and
    helpers) is prepended rather than #included so that no include path has to be resolved on
    the device's compiler. Each file starts from OpenCL's default FP_CONTRACT ON: data.cl turns
    contraction off for itself, and in a bundle that pragma had reached the files after it (the
    activation backward's 1 - y*y lost its FMA, and its tanh case 4 ulps)."""
    return "\n".join([_read_kernel_source("common.h")] +
                     [f"#pragma OPENCL FP_CONTRACT ON\n{_read_kernel_source(f)}" for f in files])


def _build_options(filename):
    return [] if filename in EXACT_DENORMAL_FILES else list(BUILD_OPTIONS)


def _define_options(defines):
    options = []
    for name, value in sorted(defines.items()):
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, float):
            value = f"{value!r}f"
        options.append(f"-D{name}={value}")
    return options


def capability_problems(cl_device):
    """What this device lacks that clcnn's float32 kernels need (empty when nothing): IEEE
    infinities and NaNs (max pooling pads with -inf; divergence is detected by NaN) and
    round-to-nearest, which embedded-profile devices may leave out, and an online compiler."""
    problems = []
    fp = cl_device.single_fp_config
    if not fp & cl.device_fp_config.INF_NAN:
        problems.append("float32 infinities and NaNs (CL_FP_INF_NAN)")
    if not fp & cl.device_fp_config.ROUND_TO_NEAREST:
        problems.append("float32 round-to-nearest (CL_FP_ROUND_TO_NEAREST)")
    if not cl_device.compiler_available:
        problems.append("an OpenCL C compiler (CL_DEVICE_COMPILER_AVAILABLE)")
    return problems


class Device:
    """One OpenCL device with its context, in-order queue, memory pool and program cache."""

    def __init__(self, index, platform, device, profiling=False):
        problems = capability_problems(device)
        if problems:
            raise DeviceError(f"device {index} ({device.name.strip()}) lacks {', '.join(problems)}, "
                              "which clcnn's kernels need; choose another with --device "
                              "(see 'clcnn devices')")
        self.index = index
        self.platform = platform
        self.cl_device = device
        self.context = cl.Context([device])
        props = cl.command_queue_properties.PROFILING_ENABLE if profiling else 0
        self.queue = cl.CommandQueue(self.context, device, properties=props)
        self.pool = cl_tools.MemoryPool(cl_tools.ImmediateAllocator(self.queue))
        self._programs = {}
        self._building = threading.Lock()   # program() may run in prepare()'s thread too
        self._preparing = None              # that thread, while it runs
        self._binary_jobs = []    # background processes writing program binaries (see _store_binary)
        self._pending_binaries = []   # [path, options] of programs whose binaries they will write
        self._kernels = {}
        self._array_templates = {}     # (shape, dtype) -> an Array's attributes (see empty)
        self.recorder = None           # a replay.Recorder while a training step is recorded
        self.frozen_weights = None     # a frozen model's kept derived weights while it runs (derived)

    @property
    def name(self):
        return self.cl_device.name.strip()

    @functools.cached_property
    def type(self):
        # Cached: each is an OpenCL query, and the op wrappers ask is_cpu several times a call.
        return _type_name(self.cl_device)

    @property
    def is_cpu(self):
        return self.type == "CPU"

    def __repr__(self):
        return f"Device({self.index!r}, {self.platform.name.strip()!r}, {self.name!r}, {self.type})"

    # -- programs and kernels -------------------------------------------------------------
    def program(self, filename, **defines):
        """Build kernels/<filename> with -D defines, once per (file, defines) on this device."""
        options = tuple(_build_options(filename) + _define_options(defines))
        key = (filename, options)
        program = self._programs.get(key)
        if program is None:
            with self._building:
                return self._build(filename, key, options)
        return program

    def _build(self, filename, key, options):
        program = self._programs.get(key)    # built by the other thread while this one waited
        if program is None:
            # The define-free build of a BUNDLE file builds the whole bundle (same options).
            files = BUNDLE if filename in BUNDLE and options == tuple(_build_options(filename)) else (filename,)
            source = program_source(files)
            program = self._cached_binary(source, options)
            if program is None:
                try:
                    program = cl.Program(self.context, source).build(options=list(options))
                except cl.RuntimeError as exc:
                    raise KernelBuildError(
                        f"building {' + '.join(files)} with {' '.join(options) or 'no defines'} failed on "
                        f"{self.name}:\n{exc}") from exc
                self._store_binary(source, options, program)
            for f in files:
                self._programs[(f, options)] = program
        return program

    def prepare(self, *filenames):
        """Build these files' define-free programs in a background thread, so that a cold
        start's compiler start-up (0.45 s on PoCL) and their builds (0.1-0.3 s each) overlap
        whatever the caller does next, such as loading a dataset; program() waits for a build
        still under way. The thread is joined at exit: a build cut off as the interpreter
        shuts down could crash the driver."""
        todo = [f for f in filenames if (f, tuple(_build_options(f))) not in self._programs]
        if not todo or self._preparing is not None:
            return
        def build_all():
            for filename in todo:
                try:
                    self.program(filename)
                except KernelBuildError:
                    pass                     # the caller's own program() raises it where it matters
        self._preparing = threading.Thread(target=build_all, name="clcnn-prepare", daemon=True)
        self._preparing.start()
        atexit.register(self._preparing.join)

    # A source build costs 0.1-1.5 s on PoCL even when PoCL's own cache hits (it runs the
    # preprocessor to find its cache key); a build from the binary takes a few ms. So built
    # programs' binaries are kept on disk, keyed by source, options, device and driver. Asking
    # PoCL for a binary compiles every kernel of the program (seconds to tens of seconds), so
    # no user-facing process waits for it: the first build only leaves a marker; the second
    # (in a later process) queues the program, and at exit one detached, low-priority process
    # (`python -m clcnn.device --store-binaries ...`) builds the queued programs and writes them.
    def _binary_path(self, source, options):
        d, p = self.cl_device, self.platform
        key = "\0".join([source, *options, p.name, p.version, d.name, d.version, d.driver_version,
                         cl.VERSION_TEXT])
        return os.path.join(_binary_cache_dir(), hashlib.sha256(key.encode()).hexdigest())

    def _cached_binary(self, source, options):
        if _binary_cache_dir() is None:
            return None
        try:
            with open(self._binary_path(source, options) + ".bin", "rb") as f:
                binary = f.read()
            return cl.Program(self.context, [self.cl_device], [binary]).build(options=list(options))
        except (OSError, cl.Error):
            return None     # absent or unusable: build from source

    def _store_binary(self, source, options, program):
        if _binary_cache_dir() is None:
            return
        path = self._binary_path(source, options)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not os.path.exists(path + ".seen"):
                open(path + ".seen", "wb").close()
                return
            if os.path.exists(path + ".bin") or not _claim(path + ".pending"):
                return                       # kept already, or another process is taking it
            with open(path + ".src", "w") as f:
                f.write(source)
            if not self._pending_binaries:
                atexit.register(self.flush_binaries)
            self._pending_binaries.append([path, list(options)])
        except (OSError, cl.Error):
            pass                             # an unwritable cache only costs later starts a source build

    def flush_binaries(self):
        """Start one detached, low-priority process that builds the programs waiting for their
        binaries and writes them (called at exit; returns the process, or None)."""
        pending, self._pending_binaries = self._pending_binaries, []
        if not pending:
            return None
        try:
            job = subprocess.Popen([sys.executable, "-m", "clcnn.device", "--store-binaries", self.index,
                                    json.dumps(pending)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            return None
        self._binary_jobs.append(job)
        return job

    def kernel(self, filename, name, **defines):
        """The kernel `name` from kernels/<filename>, built with `defines` and cached (keyed
        by the defines as given, so that a step's lookups skip building option strings)."""
        key = (filename, name, tuple(defines.items()))
        kernel = self._kernels.get(key)
        if kernel is None:
            kernel = getattr(self.program(filename, **defines), name)
            self._kernels[key] = kernel
        return kernel

    def plain_kernel(self, filename, name):
        """The kernel `name` from kernels/<filename> when its code uses none of the file's -D
        defines (pads, packs, reductions): taken from whichever program of that file this
        device has built already, else from a build without defines. A build costs PoCL
        0.2-0.7 s on a cold cache, and LeNet-5's first step had built conv2d.cl, conv2d_rows.cl
        and gemm.cl once more each just for such helpers."""
        key = (filename, name, None)
        kernel = self._kernels.get(key)
        if kernel is None:
            program = next((p for (built, _), p in list(self._programs.items()) if built == filename), None)
            kernel = getattr(program if program is not None else self.program(filename), name)
            self._kernels[key] = kernel
        return kernel

    # -- memory ---------------------------------------------------------------------------
    def out_of_memory(self, what, exc=None):
        """The DeviceOutOfMemory error for `what` (a sentence fragment naming the buffer or step)."""
        total = _megabytes(self.cl_device.global_mem_size)
        largest = _megabytes(self.cl_device.max_mem_alloc_size)
        cause = f" ({exc})" if exc is not None else ""
        return DeviceOutOfMemory(
            f"out of device memory on {self.name} for {what}{cause}; the device has {total}, "
            f"at most {largest} per buffer. Use a smaller --batch-size (or a smaller model).")

    def with_memory_retry(self, what, func, *args, **kwargs):
        """func(*args, **kwargs); on an out-of-memory error give the pool's cached blocks back
        to the device and try once more, then raise DeviceOutOfMemory naming `what` (a string,
        or a function making it, so that callers on the hot path format nothing)."""
        try:
            return func(*args, **kwargs)
        except cl.Error as exc:
            return self._retry_after(exc, what, func, *args, **kwargs)

    def _retry_after(self, exc, what, func, *args, **kwargs):
        if not is_out_of_memory(exc):
            raise exc
        self.untracked("a retry after running out of memory")
        what = what() if callable(what) else what
        if _error_code(exc) == _TOO_BIG_CODE:   # above the device's per-buffer limit
            raise self.out_of_memory(what, exc) from None
        self.pool.free_held()
        try:
            return func(*args, **kwargs)
        except cl.Error as again:
            if not is_out_of_memory(again):
                raise
            raise self.out_of_memory(what, again) from None

    def allocate(self, nbytes):
        """A buffer of nbytes from the memory pool (the allocator of every clcnn array); the
        message naming it is only made after a failure (a step allocates dozens)."""
        pool = self.pool if self.recorder is None else self.recorder.pool   # see replay.Recorder
        try:
            return pool(nbytes)
        except cl.Error as exc:
            return self._retry_after(exc, f"a buffer of {_megabytes(nbytes)}", pool, nbytes)

    # -- arrays ---------------------------------------------------------------------------
    def empty(self, shape, dtype=np.float32):
        """An uninitialised array from the pool. pyopencl's Array constructor spends ~12 us
        checking the shape and working out strides, and a training step makes dozens of
        arrays (LeNet-5: 48, about 0.5 ms of a 4 ms step), so an array of a shape made before
        is a copy of that one's attributes with a new buffer (~2 us)."""
        try:
            template = self._array_templates.get((shape, dtype))
        except TypeError:       # an unhashable shape (a list): no template
            return cl_array.empty(self.queue, shape, dtype, allocator=self.allocate)
        if template is None:
            array = cl_array.empty(self.queue, shape, dtype, allocator=self.allocate)
            array.flags     # computed once here, shared by the copies (check_array reads it)
            self._array_templates[(shape, dtype)] = dict(vars(array), base_data=None, events=None)
            return array
        array = cl_array.Array.__new__(cl_array.Array)
        vars(array).update(template)
        array.events = []
        if template["nbytes"]:
            array.base_data = self.allocate(template["nbytes"])
        return array

    def view(self, array, shape):
        """The C-contiguous array seen with another shape of the same size, sharing its buffer.
        pyopencl's reshape spends ~30 us working out strides and flags; like empty(), a view of
        a shape made before copies that one's attributes."""
        shape = tuple(int(s) for s in shape)
        template = self._array_templates.get((shape, array.dtype))
        if template is None or array.size != template["size"] or not array.flags.c_contiguous:
            view = array.reshape(shape)
            if template is None and view.flags.c_contiguous:
                self._array_templates[(shape, array.dtype)] = dict(vars(view), base_data=None, events=None,
                                                                   offset=0)
            return view
        view = cl_array.Array.__new__(cl_array.Array)
        vars(view).update(template)
        view.base_data, view.offset, view.events = array.base_data, array.offset, []
        return view

    def derived(self, what, sources, make):
        """make(): an array computed from weights alone (a BatchNorm folded into a convolution,
        weights packed or Winograd-transformed), or, while a frozen model runs its forward
        (Model.freeze), the one made for the same arrays before. The entry holds the source
        arrays, so their ids stay theirs while it lives; the model promises that their values
        do not change while it is frozen."""
        kept = self.frozen_weights
        if kept is None:
            return make()
        key = (what,) + tuple(id(a) for a in sources)
        entry = kept.get(key)
        if entry is None:
            if self.recorder is not None:
                # Made inside a recording, the array would come from the recording's own pool
                # and its launch would replay each time: keep nothing (a forward that is
                # recorded always follows a plain one of the same signature, which kept it).
                return make()
            entry = kept[key] = (sources, make())
        return entry[1]

    def untracked(self, what):
        """Note a device command made other than through ops' launch() (a fill, an upload): a
        step recorded for replay (see clcnn.replay) must not hold one, since its replay
        would leave it out."""
        if self.recorder is not None:
            self.recorder.refuse(what)

    def zeros(self, shape, dtype=np.float32):
        self.untracked("Device.zeros")
        return cl_array.zeros(self.queue, shape, dtype, allocator=self.allocate)

    def to_device(self, host_array, dtype=np.float32):
        self.untracked("Device.to_device")
        host_array = np.ascontiguousarray(host_array, dtype=dtype)
        return cl_array.to_device(self.queue, host_array, allocator=self.allocate)

    def upload(self, host_array, dtype=np.float32):
        """host_array on the device without waiting for the copy: a blocking write waits for
        every command before it in the queue, so a training step that began with one could
        not be enqueued while the previous step still ran (LeNet-5 at batch 64 ran 12-16%
        slower). The write reads a private copy taken here, which its event keeps alive until
        done, so the caller may change host_array at once; later commands on the in-order
        queue see the data."""
        self.untracked("Device.upload")
        host_copy = np.array(host_array, dtype=dtype, order="C", copy=True)
        array = self.empty(host_copy.shape, dtype)
        if host_copy.size:
            array.set(host_copy, async_=True)
        return array

    def synchronize(self):
        self.queue.finish()


def _claim(path, stale_seconds=600):
    """Create `path` exclusively (True), or False when another live claim holds it; a claim
    older than stale_seconds (its process died) is taken over."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        if time.time() - os.path.getmtime(path) < stale_seconds:
            return False
        os.unlink(path)
        return _claim(path, stale_seconds)


def _store_binaries_job(index, pending):
    """The background half of Device._store_binary: build each path.src, write path.bin."""
    os.nice(10)                              # after whatever the user runs next
    dev = get_device(index)
    for path, options in pending:
        try:
            with open(path + ".src") as f:
                source = f.read()
            program = cl.Program(dev.context, source).build(options=list(options))
            binary = program.get_info(cl.program_info.BINARIES)[0]
            if binary:
                tmp = f"{path}.tmp-{os.getpid()}"
                with open(tmp, "wb") as f:
                    f.write(binary)
                os.replace(tmp, path + ".bin")   # atomic: a reader sees no file or the whole one
        except (OSError, cl.Error):
            pass                                 # the next run builds from source, as without a cache
        finally:
            for suffix in (".src", ".pending"):
                if os.path.exists(path + suffix):
                    os.unlink(path + suffix)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--store-binaries":
    _store_binaries_job(sys.argv[2], json.loads(sys.argv[3]))
