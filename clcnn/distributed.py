"""Data-parallel training over MPI (mpi4py, imported only when asked for).

Every rank holds the whole model on its own device and takes a slice of every global batch;
after each backward pass the gradients of all ranks are summed in one MPI allreduce of one
flat float32 buffer (device -> host -> Allreduce -> device), so every rank applies the same
update and the weights stay equal to a single process's with the same global batch.

The flat buffer is [gradients..., loss, correct count, stop flag]: each rank weights its
gradients and loss by its share of the global batch (its images / the batch's images), so the
sums are the full-batch means; the correct counts add up; the stop flag carries Ctrl-C/SIGTERM
so every rank stops after the same step. BatchNorm normalises with each rank's own batch
statistics (as PyTorch DDP by default); the running statistics are averaged over the ranks at
the end of every epoch and before every checkpoint (the average of the ranks' running means is
the running mean of the ranks' averaged batch means, since the update is linear).

Collective waits poll with a deadline (CLCNN_MPI_TIMEOUT seconds, default 600): a rank that
dies or hangs makes the others print one clear line and abort the whole job, never hang.
"""
import contextlib
import os
import pickle
import signal
import socket
import sys
import tempfile
import time

import numpy as np
import pyopencl as cl

from .errors import ClcnnError

INSTALL_HINT = 'pip install "clcnn[mpi]" (mpi4py and an MPI such as the mpich wheel)'


class DistributedError(ClcnnError):
    """Distributed training cannot start (no MPI, a bad split of the batch)."""


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(f"distributed training needs mpi4py: {INSTALL_HINT}; "
                               f"then start it with mpiexec -n R ... ({exc})") from None
    return MPI


def communicator(comm=None, distributed=False):
    """The Communicator a Trainer uses: `comm` itself, a new one over MPI.COMM_WORLD when
    distributed is True, else None (single process)."""
    if comm is not None:
        return comm if isinstance(comm, Communicator) else Communicator(comm)
    return Communicator() if distributed else None


class Communicator:
    """The ranks of one training job: rank, size, local rank (on this machine), the
    collectives a training step needs, all waiting with a deadline.

    comm: an mpi4py communicator (default MPI.COMM_WORLD; it is duplicated, so clcnn's traffic
    never mixes with the caller's). timeout: seconds a collective may wait for the other
    ranks (default $CLCNN_MPI_TIMEOUT or 600)."""

    def __init__(self, comm=None, timeout=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = (MPI.COMM_WORLD if comm is None else comm).Dup()
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)   # a lost peer raises here instead of dying mute
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        if timeout is None:
            timeout = float(os.environ.get("CLCNN_MPI_TIMEOUT", "600"))
        if not timeout > 0:
            raise DistributedError(f"the collective timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.interrupt = None          # the fit's AgreedInterrupt while a fit runs
        self.allreduce_seconds = 0.0   # time spent in the step allreduce (host copies excluded)
        self.allreduce_calls = 0
        self._flat = self._host = None

    def __repr__(self):
        return f"Communicator(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"

    # -- waiting with a deadline -----------------------------------------------------------
    def abort(self, message, code=1):
        """Print one line and end every rank of the job (MPI_Abort); never returns."""
        print(f"clcnn: rank {self.rank}/{self.size}: {message}", file=sys.stderr, flush=True)
        self.comm.Abort(code)
        os._exit(code)   # Abort does not return; this is for an MPI that lets it

    def _wait(self, request, what):
        # Nonblocking collectives progress only inside MPI calls, so Test() is polled: spinning
        # for the first milliseconds (a step's allreduce is short), then sleeping between polls.
        start = time.perf_counter()
        deadline = start + self.timeout
        try:
            while not request.Test():
                now = time.perf_counter()
                if now > deadline:
                    self.abort(f"no answer from the other ranks for {self.timeout:.0f} s during {what}: a rank "
                               "died or hangs; ending the job (raise CLCNN_MPI_TIMEOUT if a rank is merely slow)")
                if now - start > 0.002:
                    time.sleep(0.0005)
        except self.MPI.Exception as exc:
            self.abort(f"lost contact with another rank during {what} ({exc.Get_error_string()}); ending the job")

    def allreduce(self, array, what="an allreduce"):
        """Sum a contiguous NumPy array over all ranks, in place."""
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM), what)
        return array

    def bcast(self, value, root=0, what="a broadcast"):
        """Rank root's picklable value, on every rank."""
        data = pickle.dumps(value) if self.rank == root else b""
        size = np.array([len(data)], np.int64)
        self._wait(self.comm.Ibcast(size, root=root), what)
        buffer = bytearray(data) if self.rank == root else bytearray(int(size[0]))
        self._wait(self.comm.Ibcast(buffer, root=root), what)
        return value if self.rank == root else pickle.loads(bytes(buffer))

    def allgather(self, value, what="an allgather"):
        return [self.bcast(value, root=r, what=what) for r in range(self.size)]

    def barrier(self, what="a barrier"):
        self._wait(self.comm.Ibarrier(), what)

    def on_root(self, func, what="a setup step of rank 0"):
        """func() run on rank 0 alone, its result (or its exception, raised again) on every rank:
        a check only rank 0 can make (the output folder) fails on every rank alike."""
        outcome = None
        if self.rank == 0:
            try:
                outcome = ("ok", func())
            except Exception as exc:   # sent to every rank and raised there
                try:
                    pickle.dumps(exc)
                    outcome = ("error", exc)
                except Exception:
                    outcome = ("error", ClcnnError(str(exc)))
        kind, value = self.bcast(outcome, what=what)
        if kind == "error":
            raise value
        return value

    # -- setup -----------------------------------------------------------------------------
    def device(self, spec=None):
        """This rank's device: spec (else $CLCNN_DEVICE, else the best device) as get_device
        chooses it; where that matches several GPUs on this machine, local rank k takes the
        k-th of them (modulo their number). Rank 0 prints every rank's choice."""
        from . import device as device_mod
        spec = spec if spec is not None else os.environ.get("CLCNN_DEVICE") or None
        gpus = [index for index, platform, dev in device_mod._all_devices()
                if device_mod._type_name(dev) == "GPU"
                and (spec is None or device_mod._matches(str(spec).strip(), index, platform, dev))]
        chosen = device_mod.get_device(gpus[self.local_rank % len(gpus)] if len(gpus) > 1 else spec)
        where = self.allgather((socket.gethostname(), self.local_rank, chosen.index, chosen.name.strip()),
                               "the device report")
        if self.rank == 0:
            for rank, (host, local, index, name) in enumerate(where):
                print(f"rank {rank} ({host}, local rank {local}): device {index} {name}", file=sys.stderr, flush=True)
        return chosen

    def split(self, count):
        """(offset, size) of this rank's slice of a batch of `count` images: sizes differ by at
        most one, lower ranks take the larger ones."""
        base, extra = divmod(int(count), self.size)
        return self.rank * base + min(self.rank, extra), base + (self.rank < extra)

    def check_batches(self, n, batch_size):
        """Every batch, the last one too, must give each rank at least one image."""
        last = n % batch_size or batch_size
        if min(batch_size, n) < self.size or last < self.size:
            raise DistributedError(
                f"{n} images in batches of {batch_size} leave a batch of {min(last, batch_size, n)} images, fewer "
                f"than the {self.size} ranks: every rank needs at least one image of every batch; change "
                "--batch-size or --limit, or use fewer ranks")

    def broadcast_model(self, model):
        """Rank 0's parameters and buffers on every rank."""
        state = self.bcast(model.state_dict() if self.rank == 0 else None, what="the weight broadcast")
        if self.rank != 0:
            model.load_state_dict(state)

    def fetch_file(self, path):
        """A path on this rank holding rank 0's file `path` (a checkpoint to resume): rank 0's
        own path, a private copy elsewhere, so ranks need no shared file system."""
        data = self.on_root(lambda: open(path, "rb").read(), what=f"reading {path}")
        if self.rank == 0:
            return path
        handle, local = tempfile.mkstemp(prefix=f"clcnn-rank{self.rank}-", suffix=".clcnn")
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        return local

    # -- training --------------------------------------------------------------------------
    def agreed_interrupt(self, local):
        self.interrupt = AgreedInterrupt(local)
        return self.interrupt

    def reduce_step(self, params, stats, slot, share):
        """Replace every parameter's gradient by the share-weighted sum over the ranks, and
        stats[slot] (this rank's loss and correct count) by the batch's; one allreduce.
        Returns True when any rank asked to stop (Ctrl-C, SIGTERM)."""
        grads = [p.grad for p in params]
        total = sum(g.size for g in grads)
        dev = params[0].device
        queue = dev.queue
        if self._host is None or self._host.size != total + 3:
            self._flat = dev.empty((max(total, 1),))
            self._host = np.empty(total + 3, np.float32)
        flat, host, offset = self._flat.base_data, self._host, 0
        for g in grads:
            cl.enqueue_copy(queue, flat, g.base_data, byte_count=g.nbytes, src_offset=g.offset, dst_offset=4 * offset)
            offset += g.size
        if total:
            cl.enqueue_copy(queue, host[:total], flat, is_blocking=False)
        cl.enqueue_copy(queue, host[total:total + 2], stats.base_data, device_offset=stats.offset + 8 * slot)
        host[:total + 1] *= np.float32(share)   # gradients and loss: means weighted by this rank's share
        local = self.interrupt.local if self.interrupt is not None else None
        host[total + 2] = 1.0 if local is not None and local.requested else 0.0
        start = time.perf_counter()
        self.allreduce(host, "the gradient allreduce")
        self.allreduce_seconds += time.perf_counter() - start
        self.allreduce_calls += 1
        # The queue is in order, so these copies finish before the next step reads host again.
        if total:
            cl.enqueue_copy(queue, flat, host[:total], is_blocking=False)
        offset = 0
        for g in grads:
            cl.enqueue_copy(queue, g.base_data, flat, byte_count=g.nbytes, src_offset=4 * offset, dst_offset=g.offset)
            offset += g.size
        cl.enqueue_copy(queue, stats.base_data, host[total:total + 2], device_offset=stats.offset + 8 * slot,
                        is_blocking=False)
        stop = bool(host[total + 2] > 0)
        if stop and self.interrupt is not None:
            self.interrupt.requested = True
        return stop

    def average_buffers(self, model):
        """Average the float buffers (BatchNorm running statistics) over the ranks."""
        buffers = [p for p in model.named_tensors().values() if not p.trainable and not p.host]
        if not buffers:
            return
        host = np.concatenate([p.value().astype(np.float32).ravel() for p in buffers])
        self.allreduce(host, "the running-statistics average")
        host /= self.size
        offset = 0
        for p in buffers:
            size = int(np.prod(p.shape))
            p.set_value(host[offset:offset + size].reshape(p.shape))
            offset += size

    @contextlib.contextmanager
    def guard(self):
        """An exception on this rank ends every rank (one line, then MPI_Abort): the others
        would otherwise wait for it in the next collective."""
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, SystemExit):   # a deliberate exit (SIGTERM's 143) that every rank makes
                raise
            message = str(exc) or type(exc).__name__
            if isinstance(exc, KeyboardInterrupt):
                message = "stopped at once by a second interrupt"
            if os.environ.get("CLCNN_DEBUG"):
                import traceback
                traceback.print_exc()
            self.abort(f"{message}; ending all {self.size} ranks")


class AgreedInterrupt:
    """The fit's interrupt flag as all ranks agree on it: set by the step allreduce when any
    rank got Ctrl-C or SIGTERM, so every rank stops after the same step."""

    def __init__(self, local):
        self.local, self.requested = local, False

    @property
    def signum(self):
        return self.local.signum if self.local.signum is not None else signal.SIGINT
