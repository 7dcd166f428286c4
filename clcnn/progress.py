"""A one-line progress bar on stderr for long work (no dependencies)."""
import sys
import time


class ProgressBar:
    def __init__(self, total, prefix="", stream=None, min_interval=0.2, width=24):
        self.total, self.prefix, self.width = total, prefix, width
        self.stream = stream or sys.stderr
        # On a terminal the bar redraws in place; in a log file it writes a plain line every
        # 10 s instead of hundreds of carriage-return updates.
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.min_interval = min_interval if self.interactive else max(min_interval, 10.0)
        self._last = time.perf_counter() if not self.interactive else 0.0

    def update(self, done, **fields):
        now = time.perf_counter()
        if done < self.total and now - self._last < self.min_interval:
            return
        self._last = now
        filled = int(self.width * done / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        text = " ".join(f"{k} {v}" for k, v in fields.items())
        if self.interactive:
            self.stream.write(f"\r{self.prefix} [{bar}] {done}/{self.total} {text}")
        elif done < self.total:
            self.stream.write(f"{self.prefix} {done}/{self.total} {text}\n")
        self.stream.flush()

    def close(self, summary=""):
        line = f"{self.prefix} {summary}"
        self.stream.write(f"\r{line.ljust(100)}\n" if self.interactive else line + "\n")
        self.stream.flush()
