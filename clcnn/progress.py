"""A one-line progress bar on stderr for long work (no dependencies)."""
import sys
import time


class ProgressBar:
    def __init__(self, total, prefix="", stream=None, min_interval=0.2, width=24):
        self.total, self.prefix, self.width = total, prefix, width
        self.stream = stream or sys.stderr
        self.min_interval = min_interval
        self._last = 0.0

    def update(self, done, **fields):
        now = time.perf_counter()
        if done < self.total and now - self._last < self.min_interval:
            return
        self._last = now
        filled = int(self.width * done / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        text = " ".join(f"{k} {v}" for k, v in fields.items())
        self.stream.write(f"\r{self.prefix} [{bar}] {done}/{self.total} {text}")
        self.stream.flush()

    def close(self, summary=""):
        self.stream.write(f"\r{self.prefix} {summary}".ljust(100) + "\n")
        self.stream.flush()
