"""Shared fixtures: the codec backends under test and the hypothesis profiles.

Every codec test takes the `codec` fixture and so runs once per backend
("native" and "pure").  DM_ENV_RPC_FAST_PURE=1 restricts the run to the pure
backend (the same switch the package honours).  Otherwise a native backend that
does not import is an error in every native test, never a silent skip: a
missing extension must not pass for a green run.

Hypothesis profiles: "default" (derandomised, moderate example counts, so the
whole suite runs in a few minutes on two cores) and "ci" (many more examples).
Pick one with HYPOTHESIS_PROFILE=ci.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

from support.backends import backend_names, load_backend, pure_only

settings.register_profile(
    "default",
    deadline=None,
    max_examples=200,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "ci", parent=settings.get_profile("default"), max_examples=400, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

@pytest.fixture(scope="session", params=backend_names())
def codec(request):
  """A codec backend module (native or pure), exporting the six codec functions."""
  return load_backend(request.param)


@pytest.fixture(scope="session")
def both_backends():
  """(native, pure) modules, for the tests that compare the two."""
  if pure_only():
    pytest.skip("DM_ENV_RPC_FAST_PURE is set: the native backend is deliberately not tested")
  return load_backend("native"), load_backend("pure")


def pytest_report_header(config):
  """Which package and backend this run tests (CI tests the installed one)."""
  import dm_env_rpc_fast.codec as codec
  return f"dm_env_rpc_fast: backend {codec.BACKEND}, from {codec.__file__}"


_SWAPPED = ("encode_tensor", "decode_tensor", "encode_step_request",
            "decode_step_request", "encode_step_response", "decode_step_response",
            "encode_step_response_into")


@pytest.fixture(params=backend_names())
def backend(request, monkeypatch):
  """Runs the test with `dm_env_rpc_fast.codec` switched to one backend.

  The v1 modules reach the codec only through the attributes of the
  `dm_env_rpc_fast.codec` module, so swapping them here switches the backend
  under `tensor_utils`, `connection`, `dm_env_adaptor` and the rest.  Returns
  the backend's name ("native" or "pure").
  """
  import dm_env_rpc_fast.codec as live_codec
  module = load_backend(request.param)
  monkeypatch.setattr(live_codec, "BACKEND", module.NAME)
  for name in _SWAPPED:
    monkeypatch.setattr(live_codec, name, getattr(module, name))
  return module.NAME
