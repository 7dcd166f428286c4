"""Download files over HTTP(S): sha256 check, progress on stderr, atomic placement.

A file is written to a hidden temporary file beside its destination and moved into place with
`os.replace` only once its sha256 matches, so a failed or interrupted download never leaves a
partial file under the real name (nor, except after a hard kill, the temporary one).
"""
import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError

_CHUNK = 1 << 16


def download_files(base_url, names, dest_dir, sha256, progress=True, timeout=30.0):
    """Download ``base_url/name`` for each of `names` into `dest_dir`, each checked against
    ``sha256[name]`` (a table of hex digests); return the destination paths."""
    base = base_url.rstrip("/") + "/"
    return [download(base + name, Path(dest_dir) / name, sha256[name], progress, timeout)
            for name in names]


def download(url, dest, sha256, progress=True, timeout=30.0):
    """Download `url` to the path `dest` if its content has the sha256 hex digest `sha256`.

    Raises `DataError` on a network or HTTP error, a truncated transfer or a checksum
    mismatch, leaving nothing at `dest`."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise DataError(f"cannot write into {dest.parent}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, progress, timeout)
        if digest != sha256.lower():
            raise DataError(f"checksum mismatch for {url}: sha256 {digest}, expected {sha256}")
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest


def _fetch(url, out, progress, timeout):
    """Stream `url` into the file `out`; return the sha256 hex digest of what came."""
    digest, got, total = hashlib.sha256(), 0, None
    bar = _Progress(url.rsplit("/", 1)[-1], progress)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                got += len(chunk)
                bar.update(got, total)
    except urllib.error.HTTPError as e:
        raise DataError(f"HTTP error {e.code} ({e.reason}) for {url}") from None
    except urllib.error.URLError as e:
        raise DataError(f"cannot reach {url}: {e.reason}") from None
    except http.client.IncompleteRead as e:
        got += len(e.partial)
        raise DataError(f"download of {url} was cut short: got {got} bytes"
                        + (f" of {total}" if total else "")) from None
    except (OSError, http.client.HTTPException) as e:
        raise DataError(f"download of {url} failed: {e}") from None
    finally:
        bar.end(got, total)
    if total is not None and got != total:
        raise DataError(f"download of {url} was cut short: got {got} bytes of {total}")
    return digest.hexdigest()


class _Progress:
    """``name: 3.1 / 26.4 MB  12%`` on stderr, redrawn in place at most 10 times a second on a
    terminal; elsewhere (logs, CI) only the final line is written."""

    def __init__(self, name, enabled):
        self.name, self.enabled = name, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.last = 0.0

    def _text(self, got, total):
        if total:
            return f"{self.name}: {got / 1e6:.1f} / {total / 1e6:.1f} MB {100 * got / total:4.0f}%"
        return f"{self.name}: {got / 1e6:.1f} MB"

    def update(self, got, total):
        now = time.monotonic()
        if self.tty and now - self.last >= 0.1:
            self.last = now
            sys.stderr.write("\r" + self._text(got, total))
            sys.stderr.flush()

    def end(self, got, total):
        if self.enabled and got:  # nothing came (no server): the error says it all
            sys.stderr.write(("\r" if self.tty else "") + self._text(got, total) + "\n")
            sys.stderr.flush()
