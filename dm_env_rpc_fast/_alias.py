"""Serving dm_env_rpc_fast under the `dm_env_rpc` module names.

Code we cannot edit (a third-party agent library, say) imports `dm_env_rpc.v1`.
`install_as_dm_env_rpc()` puts our modules into `sys.modules` under those names,
so that such code, imported afterwards, runs on the fast implementation.
"""
import importlib
import sys

# Every module of dm_env_rpc's public API, as a suffix after the package name.
MODULES = (
    "",
    ".v1",
    ".v1.dm_env_rpc_pb2",
    ".v1.dm_env_rpc_pb2_grpc",
    ".v1.error",
    ".v1.tensor_utils",
    ".v1.tensor_spec_utils",
    ".v1.spec_manager",
    ".v1.message_utils",
    ".v1.connection",
    ".v1.async_connection",
    ".v1.dm_env_adaptor",
    ".v1.dm_env_utils",
    ".v1.dm_env_flatten_utils",
    ".v1.extensions",
    ".v1.extensions.properties",
    ".v1.extensions.properties_pb2",
    ".v1.extensions.properties_pb2_grpc",
    ".v1.compliance",
    ".v1.compliance.create_destroy_world",
    ".v1.compliance.join_leave_world",
    ".v1.compliance.reset",
    ".v1.compliance.reset_world",
    ".v1.compliance.step",
)


def install_as_dm_env_rpc() -> None:
  """Makes `import dm_env_rpc...` give dm_env_rpc_fast's modules.

  Call it before anything imports `dm_env_rpc` (first thing in your program,
  or in a `conftest.py`).  Afterwards `dm_env_rpc.v1.connection` *is*
  `dm_env_rpc_fast.v1.connection`, and so on for every public module.  Calling
  it again is harmless.

  Raises:
    RuntimeError: some `dm_env_rpc` module was already imported from the
      dm-env-rpc package; code may hold references to it, so swapping it now
      would leave two implementations in play.  Call this earlier.
  """
  ours = [importlib.import_module("dm_env_rpc_fast" + suffix) for suffix in MODULES]
  clashes = sorted(
      name for name, module in list(sys.modules.items())
      if (name == "dm_env_rpc" or name.startswith("dm_env_rpc."))
      and not (getattr(module, "__name__", "") or "").startswith("dm_env_rpc_fast"))
  if clashes:
    raise RuntimeError(
        "install_as_dm_env_rpc() must run before dm_env_rpc is imported, but "
        f"{', '.join(clashes)} {'is' if len(clashes) == 1 else 'are'} already "
        "imported from the dm-env-rpc package. Call it at the very start of "
        "the program (or in conftest.py).")
  for suffix, module in zip(MODULES, ours):
    sys.modules["dm_env_rpc" + suffix] = module
