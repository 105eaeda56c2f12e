"""The progress bar on stderr while the harness runs."""

import shutil
import sys
import time
from typing import Optional, TextIO


class Progress:
  """A one-line progress bar on a terminal (carriage returns, no dependency).

  Work is counted in estimated seconds, so that long and short cells move the
  bar alike.  Disabled (every method a no-op) when the stream is not a
  terminal, or when asked.
  """

  def __init__(self, total: float, stream: TextIO = sys.stderr, enabled: bool = True):
    self._stream = stream
    self.enabled = enabled and hasattr(stream, "isatty") and stream.isatty()
    self._total = max(total, 1e-9)
    self._done = 0.0
    self._label = ""
    self._start = time.monotonic()
    self._last_draw = 0.0
    self._drawn = False

  def advance(self, amount: float, label: Optional[str] = None) -> None:
    self._done = min(self._total, self._done + amount)
    if label is not None:
      self._label = label
    self.draw()

  def set_label(self, label: str) -> None:
    self._label = label
    self.draw(force=True)

  def draw(self, force: bool = False) -> None:
    if not self.enabled:
      return
    now = time.monotonic()
    if not force and now - self._last_draw < 0.1:
      return
    self._last_draw = now
    width = shutil.get_terminal_size((80, 20)).columns
    fraction = self._done / self._total
    bar_width = 24
    filled = int(round(fraction * bar_width))
    elapsed = int(now - self._start)
    text = (f"[{'#' * filled}{'.' * (bar_width - filled)}] {fraction * 100:3.0f}% "
            f"{elapsed // 60}:{elapsed % 60:02d}  {self._label}")
    self._stream.write("\r" + text[:width - 1].ljust(width - 1))
    self._stream.flush()
    self._drawn = True

  def clear(self) -> None:
    if self.enabled and self._drawn:
      width = shutil.get_terminal_size((80, 20)).columns
      self._stream.write("\r" + " " * (width - 1) + "\r")
      self._stream.flush()
      self._drawn = False
