"""A one-line progress bar on stderr for long work (no dependencies), with the elapsed time
and an estimate of the time left."""
import sys
import time


def format_seconds(seconds):
    """1:05 for 65 s, 1:02:03 past an hour."""
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """`total` steps; `initial` of them already done before this bar began (a resumed epoch),
    so the estimate of the time left uses only the steps timed here."""

    def __init__(self, total, prefix="", stream=None, min_interval=0.2, width=24, initial=0):
        self.total, self.prefix, self.width, self.initial = total, prefix, width, initial
        self.stream = stream or sys.stderr
        # On a terminal the bar redraws in place; in a log file it writes a plain line every
        # 10 s instead of hundreds of carriage-return updates.
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.min_interval = min_interval if self.interactive else max(min_interval, 10.0)
        self.start = time.perf_counter()
        self._last = self.start if not self.interactive else 0.0

    def times(self, done, now=None):
        """(elapsed seconds, estimated seconds left or None before the first timed step)."""
        elapsed = (time.perf_counter() if now is None else now) - self.start
        timed = done - self.initial
        return elapsed, (elapsed / timed * (self.total - done) if timed > 0 else None)

    def update(self, done, **fields):
        now = time.perf_counter()
        if done < self.total and now - self._last < self.min_interval:
            return
        self._last = now
        elapsed, left = self.times(done, now)
        filled = int(self.width * done / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        clock = f"{format_seconds(elapsed)} elapsed, ETA {'?' if left is None else format_seconds(left)}"
        text = " ".join([*(f"{k} {v}" for k, v in fields.items()), clock])
        if self.interactive:
            self.stream.write(f"\r{self.prefix} [{bar}] {done}/{self.total} {text}")
        elif done < self.total:
            self.stream.write(f"{self.prefix} {done}/{self.total} {text}\n")
        self.stream.flush()

    def close(self, summary=""):
        line = f"{self.prefix} {summary} ({format_seconds(time.perf_counter() - self.start)})"
        self.stream.write(f"\r{line.ljust(100)}\n" if self.interactive else line + "\n")
        self.stream.flush()
