#!/usr/bin/env python3
"""Regenerates the committed *_pb2 / *_pb2_grpc modules from protos/.

Each module goes beside its proto's path under dm_env_rpc_fast/ (protos/dm_env_rpc/X
to dm_env_rpc_fast/X), except those DESTINATIONS moves: dm_env_rpc_pb2 is
written to dm_env_rpc_fast/_proto/, below the codec.

The committed modules set the package's floors (protobuf >= gencode version,
grpcio >= GRPC_GENERATED_VERSION), so they are made with one pinned
grpcio-tools release.  Run it in any environment that has that release:

    pip install grpcio-tools==1.64.1 googleapis-common-protos
    python tools/gen_protos.py          # rewrite the modules
    python tools/gen_protos.py --check  # exit 1 if they differ from protos/

tests/test_generated_protos.py checks the committed descriptors against
protos/ with whatever grpcio-tools is installed, so a stale module fails the
test suite even where this pinned release is not installed.
"""

import argparse
import importlib.metadata
import os
import pathlib
import shutil
import sys
import tempfile

PINNED_GRPCIO_TOOLS = "1.64.1"
ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = ROOT / "dm_env_rpc_fast"
PROTOS = ["dm_env_rpc/v1/dm_env_rpc.proto", "dm_env_rpc/v1/extensions/properties.proto",
          "dm_env_rpc_fast/shm/channel.proto"]
# Modules written somewhere other than their proto's directory, by path under
# dm_env_rpc_fast/.  dm_env_rpc's messages go below the codec, which needs
# them; v1/dm_env_rpc_pb2.py, written by hand, serves them under upstream's name.
DESTINATIONS = {"v1/dm_env_rpc_pb2.py": "_proto/dm_env_rpc_pb2.py"}


def include_dirs():
    """protos/, protobuf's well-known types, and google/rpc from googleapis."""
    import grpc_tools
    import google.rpc.status_pb2 as status_pb2

    wkt = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    # google/rpc/status.proto ships beside status_pb2.py in googleapis-common-protos.
    googleapis = pathlib.Path(status_pb2.__file__).parent.parent.parent
    return [PROTO_ROOT, wkt, googleapis]


def protoc(args):
    from grpc_tools import protoc as _protoc

    includes = [f"-I{d}" for d in include_dirs()]
    rc = _protoc.main(["protoc", *includes, *args])
    if rc != 0:
        raise SystemExit(f"protoc failed ({rc}) for: {' '.join(args)}")


def relocate(text):
    """Generated code imports dm_env_rpc.v1; ours lives in dm_env_rpc_fast.v1."""
    return text.replace("from dm_env_rpc.v1", "from dm_env_rpc_fast.v1")


def generate(out_dir):
    """Writes the relocated modules under out_dir/dm_env_rpc_fast; returns their paths there."""
    raw = pathlib.Path(out_dir) / "raw"
    raw.mkdir()
    protoc([f"--python_out={raw}", f"--grpc_python_out={raw}",
            *[str(PROTO_ROOT / p) for p in PROTOS]])
    written = []
    for src in sorted(raw.rglob("*.py")):
        # protos/dm_env_rpc/X -> dm_env_rpc_fast/X; protos/dm_env_rpc_fast/X -> the same.
        top = src.relative_to(raw).parts[0]
        if top == "dm_env_rpc_fast" and src.name.endswith("_pb2_grpc.py"):
            continue  # our own protos define messages only, no service
        rel = src.relative_to(raw / top)
        rel = pathlib.Path(DESTINATIONS.get(rel.as_posix(), rel))
        dst = pathlib.Path(out_dir) / "dm_env_rpc_fast" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(relocate(src.read_text()))
        written.append(dst.relative_to(pathlib.Path(out_dir) / "dm_env_rpc_fast"))
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed modules instead of writing them")
    args = parser.parse_args()
    have = importlib.metadata.version("grpcio-tools")
    if have != PINNED_GRPCIO_TOOLS:
        raise SystemExit(f"grpcio-tools {have} is installed; the committed modules are made "
                         f"with {PINNED_GRPCIO_TOOLS}: pip install grpcio-tools=={PINNED_GRPCIO_TOOLS}")
    with tempfile.TemporaryDirectory() as tmp:
        stale = []
        for rel in generate(tmp):
            fresh = pathlib.Path(tmp) / "dm_env_rpc_fast" / rel
            committed = PACKAGE / rel
            if args.check:
                if not committed.exists() or committed.read_text() != fresh.read_text():
                    stale.append(str(committed.relative_to(ROOT)))
            else:
                shutil.copyfile(fresh, committed)
                print(f"wrote {committed.relative_to(ROOT)}")
        if stale:
            print("stale generated modules (run tools/gen_protos.py):", *stale, sep="\n  ")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
