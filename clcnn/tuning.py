"""Per-device choice among interchangeable kernels, by timing them once and remembering.

Like CLBlast's tuner, but at run time and small: the first time an op meets a shape worth
tuning, `choose` times each candidate on the real arguments and keeps the fastest; the choice
is stored in a JSON file keyed by platform, device, driver version and the op's shape key, so
later processes skip the timing.

Environment:
  CLCNN_TUNE=0       never time; use the caller's heuristic default (also for cached shapes)
  CLCNN_TUNE=1       time every shape not in the cache
  (unset) / "auto"   time only shapes the caller marks as worth it (the conv ops: batch >= 16,
                     i.e. training and inference batches, which repeat thousands of times;
                     the tests' random batch-1..3 shapes run the heuristic and cost nothing)
  CLCNN_CACHE_DIR    directory of tuning.json (default ~/.cache/clcnn)

A corrupt or unreadable cache file is ignored with a warning (and rewritten on the next
choice); writes go to a temporary file then os.replace, so readers never see half a file.
"""
import functools
import json
import os
import tempfile
import time
import warnings

from .errors import DeviceOutOfMemory

_FORMAT = 1
_REPEATS = 3        # timed runs per candidate after one warm-up (which also builds the kernels)
_GIVE_UP = 4.0      # a candidate this many times slower than the best so far is not repeated


def cache_path():
    # The environment is read on every call (tests and users may change it); the path built
    # from it is cached, since convolutions ask for it on every training step.
    return _cache_path(os.environ.get("CLCNN_CACHE_DIR"), os.environ.get("HOME"))


@functools.lru_cache(maxsize=16)
def _cache_path(cache_dir, home):
    root = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "clcnn")
    return os.path.join(root, "tuning.json")


@functools.lru_cache(maxsize=None)
def device_key(dev):
    """Platform, device and driver: a new driver may change which kernel wins (cached per
    device: each name is an OpenCL query)."""
    d = dev.cl_device
    return f"{dev.platform.name.strip()}|{d.name.strip()}|{d.driver_version.strip()}"


def mode():
    value = os.environ.get("CLCNN_TUNE", "auto").strip().lower()
    return {"0": "off", "false": "off", "no": "off", "1": "on", "true": "on", "yes": "on"}.get(value, "auto")


class Tuner:
    """Choices of one cache file, loaded lazily and written through on every new choice."""

    def __init__(self, path):
        self.path = path
        self._choices = None

    def _load(self):
        if self._choices is not None:
            return self._choices
        self._choices = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict) or data.get("format") != _FORMAT or \
                    not isinstance(data.get("choices"), dict):
                raise ValueError("not a clcnn tuning file of format 1")
            self._choices = {k: v for k, v in data["choices"].items()
                             if isinstance(v, dict) and isinstance(v.get("choice"), str)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:    # json.JSONDecodeError is a ValueError
            warnings.warn(f"clcnn: ignoring the tuning cache {self.path} ({exc}); it will be rebuilt",
                          RuntimeWarning, stacklevel=3)
        return self._choices

    def _save(self):
        folder = os.path.dirname(self.path) or "."
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tuning-", suffix=".json", dir=folder)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"format": _FORMAT, "choices": self._choices}, f, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:      # a read-only home must not stop the computation
            warnings.warn(f"clcnn: could not write the tuning cache {self.path} ({exc})",
                          RuntimeWarning, stacklevel=3)

    def lookup(self, key):
        entry = self._load().get(key)
        return entry["choice"] if entry else None

    def settled(self, dev, op_key, names, default, worth_tuning=True):
        """The name choose() would return without timing anything (timing off, a cached
        choice, or the default where timing is not worth it), else None."""
        tune = mode()
        if tune == "off":
            return default
        known = self.lookup(f"{device_key(dev)}|{op_key}")
        if known in names:
            return known
        return default if tune == "auto" and not worth_tuning else None

    def choose(self, dev, op_key, candidates, default, worth_tuning=True):
        """Name of the candidate to run for `op_key` (a string naming the op and its shape).
        candidates: {name: zero-argument callable enqueuing the op once}; default: the name
        the heuristic picks, used when timing is off or not worth it."""
        settled = self.settled(dev, op_key, candidates, default, worth_tuning)
        if settled is not None:
            return settled
        key = f"{device_key(dev)}|{op_key}"
        times = {}
        for name, fn in candidates.items():
            times[name] = _time(dev, fn, min(times.values(), default=float("inf")))
        best = min(times, key=times.get)
        if times[best] == float("inf"):
            return default
        # Merge with what another process may have written since we loaded.
        self._choices = None
        self._load()[key] = {"choice": best, "ms": {k: round(v * 1e3, 4) for k, v in times.items()}}
        self._save()
        return best


def _time(dev, fn, best_so_far):
    """Median wall time of fn() + queue.finish() after a warm-up, or the first time alone when
    that is far behind best_so_far; inf when it fails (a kernel that does not build or launch
    on this device simply loses)."""
    try:
        fn()
        dev.queue.finish()
        times = []
        for _ in range(_REPEATS):
            t0 = time.perf_counter()
            fn()
            dev.queue.finish()
            times.append(time.perf_counter() - t0)
            if times[0] > _GIVE_UP * best_so_far:
                break
    except DeviceOutOfMemory:
        raise                   # the batch does not fit: no other candidate will help
    except Exception as exc:    # noqa: BLE001 -- any other failure just disqualifies the candidate
        warnings.warn(f"clcnn: tuning candidate failed ({exc})", RuntimeWarning, stacklevel=3)
        return float("inf")
    return sorted(times)[len(times) // 2]


_tuners = {}


def get_tuner():
    """The Tuner of the current cache path (re-read from the environment on each call)."""
    path = cache_path()
    if path not in _tuners:
        _tuners[path] = Tuner(path)
    return _tuners[path]
