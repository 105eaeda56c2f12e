"""Every test under tests/v1 runs once per codec backend (see `backend`)."""
import pytest


@pytest.fixture(autouse=True)
def _on_each_backend(backend):
  return backend
