"""The generated protobuf modules are committed; this fails when they are stale (run make proto)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTOS = ["proto/deeplake_service.proto", "proto/node.proto", "proto/meta.proto",
          "proto/admin.proto"]


def test_generated_modules_match_the_proto_sources(tmp_path):
    (tmp_path / "proto").mkdir()
    for proto in PROTOS:
        (tmp_path / proto).write_text((ROOT / proto).read_text())
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.",
                    "--grpc_python_out=.", "--pyi_out=.", *PROTOS], cwd=tmp_path, check=True)
    stale = []
    for generated in sorted((tmp_path / "proto").glob("*_pb2*.py*")):
        committed = ROOT / "proto" / generated.name
        if not committed.exists() or committed.read_text() != generated.read_text():
            stale.append(generated.name)
    assert not stale, f"stale generated modules {stale}: run `make proto`"


def test_public_proto_keeps_the_seed_package_and_services():
    from proto import deeplake_service_pb2 as pb
    assert pb.DESCRIPTOR.package == "deeplake.v1"
    services = set(pb.DESCRIPTOR.services_by_name)
    assert {"DatasetService", "VectorService", "SearchService", "HealthService"} <= services
    # Spot-check field numbers the seed fixes.
    fields = pb.SearchOptions.DESCRIPTOR.fields_by_name
    assert fields["top_k"].number == 1 and fields["min_score"].number == 13
    assert pb.Vector.DESCRIPTOR.fields_by_name["tenant_id"].number == 17
    assert pb.CreateDatasetRequest.DESCRIPTOR.fields_by_name["shard_count"].number == 10


def test_no_generated_module_lives_under_a_folder_named_deeplake():
    assert not any(p.name == "deeplake" for p in ROOT.rglob("*") if p.is_dir()
                   and ".venv" not in p.parts)


def _seed_messages() -> dict[str, dict[str, tuple[str, int]]]:
    """Parses the seed spec's proto text (tests/fixtures) into {message: {field: (type, no)}}."""
    import re
    text = (ROOT / "tests/fixtures/seed_000_deeplake_service.proto.txt").read_text()
    messages: dict[str, dict[str, tuple[str, int]]] = {}
    for name, body in re.findall(r"message\s+(\w+)\s*\{([^{}]*)\}", text):
        fields = {}
        for ftype, fname, number in re.findall(
                r"^\s*((?:repeated\s+)?[\w.<>, ]+?)\s+(\w+)\s*=\s*(\d+);", body, flags=re.M):
            fields[fname] = (" ".join(ftype.split()), int(number))
        messages[name] = fields
    return messages


def test_every_seed_message_field_keeps_its_name_number_and_kind():
    from google.protobuf.descriptor import FieldDescriptor as F
    from proto import deeplake_service_pb2 as pb
    seed = _seed_messages()
    assert len(seed) == 15
    scalar = {"string": F.TYPE_STRING, "int32": F.TYPE_INT32, "int64": F.TYPE_INT64,
              "float": F.TYPE_FLOAT, "double": F.TYPE_DOUBLE, "bool": F.TYPE_BOOL}
    # Labels are not compared: `optional` (proto3 field presence) on a seed field, as on
    # SearchOptions.min_score or HybridSearchRequest.alpha, is compatible. It keeps the name,
    # number, type and wire format, and a seed client that never sets presence still works.
    for message, fields in seed.items():
        ours = pb.DESCRIPTOR.message_types_by_name[message].fields_by_name
        for name, (kind, number) in fields.items():
            assert name in ours, f"{message}.{name} missing"
            assert ours[name].number == number, f"{message}.{name} renumbered"
            base = kind.removeprefix("repeated ").strip()
            if base in scalar:
                assert ours[name].type == scalar[base], f"{message}.{name} changed type"
            if kind.startswith("repeated"):
                assert ours[name].is_repeated, f"{message}.{name} no longer repeated"


def test_every_seed_rpc_exists_with_its_request_and_response():
    import re
    from proto import deeplake_service_pb2 as pb
    text = (ROOT / "tests/fixtures/seed_000_deeplake_service.proto.txt").read_text()
    rpcs = re.findall(r"service\s+(\w+)\s*\{(.*?)\}", text, flags=re.S)
    assert len(rpcs) == 4
    for service, body in rpcs:
        ours = pb.DESCRIPTOR.services_by_name[service].methods_by_name
        for method, request, response in re.findall(
                r"rpc\s+(\w+)\((\w+)\)\s+returns\s+\((\w+)\)", body):
            assert ours[method].input_type.name == request
            assert ours[method].output_type.name == response
