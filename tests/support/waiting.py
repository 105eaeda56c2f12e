"""Waiting for something another thread or process does: a bounded poll."""
import time


def wait_until(predicate, timeout=30.0, interval=0.01):
  """Polls `predicate` until it holds or `timeout` seconds pass; returns its last value."""
  deadline = time.monotonic() + timeout
  while True:
    value = predicate()
    if value or time.monotonic() > deadline:
      return value
    time.sleep(interval)
