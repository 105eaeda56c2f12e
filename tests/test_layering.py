"""The package's layers import only downwards (issue #15, item 3).

_proto (the generated dm_env_rpc messages and DmEnvRpcError) imports nothing
else of the package; the codec builds on _proto and never on v1, the drop-in
layer above it; and the rest of the package reaches the codec through its
public names, not its private modules.  Every rule is checked in the source
(every import statement, wherever it sits); the first two also in a fresh
interpreter (what importing and using the layer actually loads).
"""

import ast
import pathlib

import pytest

from support.backends import run

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "dm_env_rpc_fast"


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def imported_modules(path: pathlib.Path, root: pathlib.Path = PACKAGE.parent):
  """(line, module) for every module an import statement in `path` names.

  `root` is the directory holding the top-level package.  Relative imports are
  resolved; `from X import Y` yields both X and X.Y (Y may be a submodule).
  """
  package = _module_name(path, root)
  if path.name != "__init__.py":
    package = package.rpartition(".")[0]
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.extend((node.lineno, alias.name) for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")
        base = base[:len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
      else:
        module = node.module
      found.append((node.lineno, module))
      found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
  return found


def _within(module: str, package: str) -> bool:
  return module == package or module.startswith(package + ".")


def _violations(directory: pathlib.Path, forbidden):
  bad = []
  for path in sorted(directory.rglob("*.py")):
    for line, module in imported_modules(path):
      if forbidden(module):
        bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
  return bad


def test_the_codec_source_never_imports_v1():
  bad = _violations(PACKAGE / "codec", lambda m: _within(m, "dm_env_rpc_fast.v1"))
  assert not bad, "the codec must not import the v1 layer above it:\n" + "\n".join(bad)


def test_proto_source_imports_nothing_else_of_the_package():
  bad = _violations(PACKAGE / "_proto", lambda m: _within(m, "dm_env_rpc_fast")
                    and not _within(m, "dm_env_rpc_fast._proto"))
  assert not bad, "_proto is the ground floor:\n" + "\n".join(bad)


def test_the_rest_of_the_package_uses_the_codecs_public_names():
  def private_codec_module(module):
    parts = module.split(".")
    return parts[:2] == ["dm_env_rpc_fast", "codec"] and len(parts) > 2 and parts[2].startswith("_")

  bad = [found for found in _violations(PACKAGE, private_codec_module)
         if not found.startswith("dm_env_rpc_fast/codec/")]
  assert not bad, "outside codec/, use dm_env_rpc_fast.codec's public names:\n" + "\n".join(bad)


ROOT = PACKAGE.parent


def test_no_test_module_imports_another_or_conftest():
  """Shared test code lives in tests/support (imported as `support`), not in test modules."""
  bad = []
  for directory in (ROOT / "tests", ROOT / "bench"):
    for path in sorted(directory.rglob("*.py")):
      for line, module in imported_modules(path, path.parent):
        top = module.split(".")[0]
        if top == "conftest" or top.startswith("test_"):
          bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
  assert not bad, "move what is shared into tests/support:\n" + "\n".join(bad)


def test_no_tool_puts_the_tests_on_sys_path():
  bad = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "tools").glob("*.py"))
         if "sys.path" in path.read_text() and "tests" in path.read_text()]
  assert not bad, "tools run test support with python -m support.<module> from tests/: " + str(bad)


def test_the_checker_sees_relative_and_nested_imports(tmp_path):
  """The source checks above would pass vacuously if imported_modules missed imports."""
  source = tmp_path / "dm_env_rpc_fast" / "codec" / "_pure" / "m.py"
  source.parent.mkdir(parents=True)
  source.write_text("def f():\n  from ...v1 import error\n  import dm_env_rpc_fast.v1.x\n"
                    "from .. import _common\n")
  assert sorted(imported_modules(source, tmp_path)) == [
      (2, "dm_env_rpc_fast.v1"), (2, "dm_env_rpc_fast.v1.error"), (3, "dm_env_rpc_fast.v1.x"),
      (4, "dm_env_rpc_fast.codec"), (4, "dm_env_rpc_fast.codec._common")]


# Everything the codec does that touches protobuf or the error class: string
# and proto payloads, a Tensor message sent as is, an error response.
_USE_THE_CODEC = """
import sys
import numpy as np
from google.rpc import status_pb2
import dm_env_rpc_fast.codec as codec
from dm_env_rpc_fast._proto import dm_env_rpc_pb2 as pb
from dm_env_rpc_fast._proto.error import DmEnvRpcError
codec.decode_tensor(codec.encode_tensor(np.array(["a", "b"])))
codec.decode_tensor(codec.encode_tensor(status_pb2.Status(code=1)))
sent = pb.Tensor(int32s=pb.Tensor.Int32Array(array=[5]))
assert codec.decode_step_request(codec.encode_step_request({1: sent}, [2]))[0][1] == 5
error = pb.EnvironmentResponse(error=status_pb2.Status(code=3, message="no")).SerializeToString()
try:
  codec.decode_step_response(error)
except Exception as e:
  assert type(e) is DmEnvRpcError, repr(e)
else:
  raise AssertionError("an error response did not raise")
print(codec.BACKEND, sorted(m for m in sys.modules if m.startswith("dm_env_rpc_fast.v1")))
"""


@pytest.mark.parametrize("pure", ["0", "1"], ids=["default", "pure"])
def test_using_the_codec_loads_no_v1_module(pure):
  """"default" is what a plain import picks: native where it is built, pure where not."""
  backend, loaded = run(_USE_THE_CODEC, pure=pure).split(" ", 1)
  assert loaded == "[]", f"the {backend} codec loaded {loaded}"


def test_proto_loads_nothing_else_of_the_package():
  loaded = run("import sys, dm_env_rpc_fast._proto.dm_env_rpc_pb2, dm_env_rpc_fast._proto.error; "
               "print(sorted(m for m in sys.modules if m.startswith('dm_env_rpc_fast')))")
  # The package's __init__ always runs first; it loads only _alias (itself lazy).
  assert loaded == str(["dm_env_rpc_fast", "dm_env_rpc_fast._alias", "dm_env_rpc_fast._proto",
                        "dm_env_rpc_fast._proto.dm_env_rpc_pb2",
                        "dm_env_rpc_fast._proto.error"])
