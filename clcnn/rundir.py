"""Output folders of training runs: numbered new folders, one live run per folder (a lock),
and the tidying of unfinished checkpoint writes.

The lock is an flock on OUT/.clcnn.lock, which holds the owner's pid for messages. The kernel
drops an flock when its process dies, however it dies, so a lock left by a killed run is
simply taken over; the file itself stays (deleting it would let two runs lock two inodes).
"""
import os
import re
import time

try:
    import fcntl
except ImportError:      # no flock (Windows): the lock is advisory through the pid alone
    fcntl = None

from .errors import ClcnnError

LOCK_NAME = ".clcnn.lock"
CHECKPOINT_NAMES = ("last.clcnn", "best.clcnn")
# Temporaries of serialization.write_archive: .tmp-<writer pid>-<random>.clcnn (older clcnn
# versions wrote .tmp-<random>.clcnn, without the pid).
_TEMPORARY = re.compile(r"^\.tmp-(?:(\d+)-)?.*\.clcnn$")

_held = {}   # real path of a locked folder -> [open lock file descriptor, nesting count, since]


class FolderInUse(ClcnnError):
    """Another live process trains into the same output folder."""


def claim_run_dir(base):
    """(folder, its FolderLock held) for a new run: the first of base, base-2, base-3, ...
    that holds no earlier run and no live one (a folder left empty by a run that failed at
    start is reused). Two runs started together get two folders."""
    for number in range(1, 100000):
        path = base if number == 1 else f"{base}-{number}"
        if os.path.exists(path) and (not os.path.isdir(path) or holds_run(path)):
            continue
        lock = FolderLock(path)
        try:
            lock.acquire()
        except FolderInUse:
            continue
        if not holds_run(path):
            return path, lock
        lock.release()
    raise ClcnnError(f"no free run folder name after {base}-99999; pass --out")


def holds_run(directory):
    """Whether `directory` holds the checkpoints or history of an earlier run."""
    return holds_checkpoints(directory) or os.path.exists(os.path.join(directory, "history.json"))


def holds_checkpoints(directory):
    return any(os.path.exists(os.path.join(directory, name)) for name in CHECKPOINT_NAMES)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # a live process of another user
        return True
    except OSError:
        return False
    return True


class FolderLock:
    """Hold `directory` for this process (reentrant: the CLI and Trainer.fit both take it).

    A second process gets FolderInUse naming the folder and the owner's pid."""

    def __init__(self, directory):
        self.directory = os.fspath(directory)
        self.key = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def acquire(self):
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ClcnnError(f"{self.directory} is a file, not a folder; pass another --out")
        os.makedirs(self.directory, exist_ok=True)
        self.key = os.path.realpath(self.directory)
        if self.key in _held:
            _held[self.key][1] += 1
            return
        path = os.path.join(self.directory, LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise FolderInUse(f"{self.directory} is in use by another training run (pid "
                                      f"{_read_pid(fd)}); wait for it to end or pass another --out") from None
            else:
                pid = _read_pid(fd)
                if pid not in (None, os.getpid()) and pid_alive(pid):
                    raise FolderInUse(f"{self.directory} is in use by another training run (pid {pid}); "
                                      "wait for it to end or pass another --out")
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        _held[self.key] = [fd, 1, time.time()]
        remove_stale_temporaries(self.directory)

    def release(self):
        entry = _held.get(self.key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[self.key]
            os.close(entry[0])     # closing drops the flock


def _read_pid(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def remove_stale_temporaries(directory):
    """Remove the temporaries of checkpoint writes that can no longer finish: their writer's
    pid is dead, or (names without a pid) they predate this process's lock on the folder.
    Only the lock holder tidies, so a live run's temporary is never taken from under it."""
    entry = _held.get(os.path.realpath(directory))
    if entry is None or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        match = _TEMPORARY.match(name)
        if not match:
            continue
        path = os.path.join(directory, name)
        try:
            if match.group(1) is not None:
                stale = not pid_alive(int(match.group(1)))
            else:
                stale = os.path.getmtime(path) < entry[2]
            if stale:
                os.unlink(path)
        except FileNotFoundError:
            pass
