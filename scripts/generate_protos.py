"""Generate Python code (messages, gRPC stubs, and their .pyi types) from proto/.

    python scripts/generate_protos.py           # write gen/python
    python scripts/generate_protos.py --check   # exit 1 if gen/python is stale

protoc writes the messages (_pb2.py) and grpcio's stubs (_pb2_grpc.py);
mypy-protobuf writes the types of both (.pyi): the messages' with the
contracts' comments, oneofs and enums typed, and the stubs' typed for grpc.aio
and sync channels alike (the client SDK's `client.identity.GetMe` is typed
from them). protoc's own --pyi_out types messages only, so it is not used.

Also lays out the googleapis .proto files buf needs in .build/proto-deps,
taken from the installed googleapis-common-protos wheel so nothing is fetched.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

import google.api
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "gen" / "python"
BUF_DEPS_DIR = ROOT / ".build" / "proto-deps"
# google.api lives in site-packages/google/api: its grandparent is the include root.
GOOGLEAPIS_INCLUDE = Path(google.api.__path__[0]).parent.parent
WELL_KNOWN_INCLUDE = Path(protoc.__file__).parent / "_proto"
GOOGLEAPIS_PACKAGES = ("google/api", "google/rpc")
# mypy-protobuf's protoc plugins, named explicitly: `make` runs this script
# with the virtualenv's python without putting its bin/ on PATH.
PLUGINS_DIR = Path(sysconfig.get_path("scripts"))
MYPY_PLUGINS = ("protoc-gen-mypy", "protoc-gen-mypy_grpc")


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    missing = [plugin for plugin in MYPY_PLUGINS if not (PLUGINS_DIR / plugin).exists()]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} not in {PLUGINS_DIR}: install mypy-protobuf (`make install`)")
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{GOOGLEAPIS_INCLUDE}",
        f"-I{WELL_KNOWN_INCLUDE}",
        *(f"--plugin={plugin}={PLUGINS_DIR / plugin}" for plugin in MYPY_PLUGINS),
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        *(str(p.relative_to(PROTO_DIR)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Regular packages (not namespace ones) so tools and importers agree.
    for package_dir in [p for p in out_dir.rglob("*") if p.is_dir()]:
        (package_dir / "__init__.py").touch()


def tree(directory: Path) -> set[Path]:
    return {p.relative_to(directory) for p in directory.rglob("*") if p.is_file()}


def stale_files(fresh: Path, current: Path) -> list[str]:
    """Files that differ between a fresh generation and the current one."""
    if not current.exists():
        return sorted(str(p) for p in tree(fresh))
    fresh_files, current_files = tree(fresh), tree(current)
    differing = {
        p for p in fresh_files & current_files
        if not filecmp.cmp(fresh / p, current / p, shallow=False)
    }
    return sorted(str(p) for p in (fresh_files ^ current_files) | differing)


def copy_buf_deps() -> None:
    for package in GOOGLEAPIS_PACKAGES:
        target = BUF_DEPS_DIR / package
        target.mkdir(parents=True, exist_ok=True)
        for proto in (GOOGLEAPIS_INCLUDE / package).glob("*.proto"):
            if not (target / proto.name).exists() or not filecmp.cmp(proto, target / proto.name):
                shutil.copyfile(proto, target / proto.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if gen/python is stale")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "python"
        generate(fresh)
        stale = stale_files(fresh, OUT_DIR)
        if options.check:
            if stale:
                print("generated code is stale; run `make gen`:", *stale, sep="\n  ")
                return 1
            return 0
        if stale:
            shutil.rmtree(OUT_DIR, ignore_errors=True)
            shutil.copytree(fresh, OUT_DIR)
            print(f"regenerated {OUT_DIR.relative_to(ROOT)}: {len(stale)} file(s) changed")
    copy_buf_deps()
    return 0


if __name__ == "__main__":
    sys.exit(main())
