"""What a typed message costs to encode and decode in Python: protobuf's own
runtime (upb, under the grpcio stubs the client SDK uses) against betterproto2's
dataclasses, on a rag_engine RetrieveResponse of 10 chunks (about 5 KB).

    .venv/bin/pip install -e '.[bench]'     # betterproto2 and its compiler
    .venv/bin/python -m bench.sdk_codec [--out bench/results/sdk_codec.md]

It is why the SDK is not betterproto2 (README, Client SDK). betterproto2's code
is generated here from proto/, by its own compiler, into a scratch package.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import tempfile
import timeit
from datetime import date
from pathlib import Path

import betterproto2
from grpc_tools import protoc

from sagemesh.rag_engine.v1 import rag_engine_pb2
from scripts.generate_protos import GOOGLEAPIS_INCLUDE, PLUGINS_DIR, PROTO_DIR, WELL_KNOWN_INCLUDE

CONTRACT = "sagemesh/rag_engine/v1/rag_engine.proto"
PASSAGE = "Meals on business trips are reimbursed up to 45 euros a day. " * 8
SCRATCH_PACKAGE = "betterproto2_generated"


def betterproto2_module(scratch: Path):
    """The contract compiled by betterproto2 (messages only) and imported."""
    out = scratch / SCRATCH_PACKAGE
    out.mkdir()
    plugin = "protoc-gen-python_betterproto2"
    args = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{GOOGLEAPIS_INCLUDE}", f"-I{WELL_KNOWN_INCLUDE}",
            f"--plugin={plugin}={PLUGINS_DIR / plugin}", f"--python_betterproto2_out={out}",
            "--python_betterproto2_opt=client_generation=none", CONTRACT]
    if protoc.main(args) != 0:
        raise SystemExit("betterproto2's compiler failed")
    sys.path.insert(0, str(scratch))
    return importlib.import_module(f"{SCRATCH_PACKAGE}.sagemesh.rag_engine.v1")


def retrieve_response(module):
    """The same message in either library: ten retrieved chunks."""
    return module.RetrieveResponse(results=[
        module.RetrievedChunk(chunk_id=f"doc-1:{i}", document_id="doc-1", kb_id="kb-1", title="Expenses",
                              content=PASSAGE, page=i, headings=["Travel", "Meals"], score=0.5, vector_rank=i)
        for i in range(10)])


def microseconds(operation) -> float:
    """The best of five runs, each long enough to time (about 0.2 s)."""
    timer = timeit.Timer(operation)
    number, _ = timer.autorange()
    return min(timer.repeat(5, number)) / number * 1e6


def measure() -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory() as scratch:
        bp2 = betterproto2_module(Path(scratch))
        upb_message, bp2_message = retrieve_response(rag_engine_pb2), retrieve_response(bp2)
        wire = upb_message.SerializeToString()
        # The same bytes both ways: the comparison is of equals.
        assert rag_engine_pb2.RetrieveResponse.FromString(bytes(bp2_message)) == upb_message
        assert bp2.RetrieveResponse.parse(wire) == bp2_message
        return {
            "size": (len(wire), len(bytes(bp2_message))),
            "serialize": (microseconds(upb_message.SerializeToString), microseconds(lambda: bytes(bp2_message))),
            "parse": (microseconds(lambda: rag_engine_pb2.RetrieveResponse.FromString(wire)),
                      microseconds(lambda: bp2.RetrieveResponse.parse(wire))),
        }


def report(figures: dict[str, tuple[float, float]]) -> str:
    from google.protobuf.internal import api_implementation

    upb, bp2 = f"protobuf {api_implementation.Type()}", f"betterproto2 {betterproto2.__version__}"
    lines = [
        f"# Typed messages in Python: protobuf against betterproto2 ({date.today().isoformat()})",
        "",
        f"A RetrieveResponse of 10 chunks ({figures['size'][0]:,} bytes on the wire), best of five runs; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {upb}, {bp2}.",
        "",
        f"| operation | {upb} µs | {bp2} µs | betterproto2 / protobuf |",
        "|---|---|---|---|",
    ]
    for operation in ("serialize", "parse"):
        ours, theirs = figures[operation]
        lines.append(f"| {operation} | {ours:.1f} | {theirs:.1f} | {theirs / ours:.0f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the report here")
    options = parser.parse_args()
    text = report(measure())
    print(text)
    if options.out:
        options.out.write_text(text)


if __name__ == "__main__":
    main()
