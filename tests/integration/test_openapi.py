"""The OpenAPI document (router/openapi.py) against the routes the REST app really registers, and
the served /openapi.json and /docs of the shared cluster.

If you add a route to router/rest.py, test_every_registered_route_is_documented fails until the
route has an entry in router.openapi.OPERATIONS."""

from __future__ import annotations

import uuid

import httpx
import pytest

from router import auth, openapi
from router.rest import make_app

pytestmark = pytest.mark.integration

SELF_ROUTES = {("GET", openapi.OPENAPI_PATH), ("GET", openapi.DOCS_PATH)}
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


class DummyCore:
    """make_app only stores the core; building the router needs no cluster."""


@pytest.fixture(scope="module")
def app():
    return make_app(DummyCore())


@pytest.fixture(scope="module")
def document(app):
    return openapi.build_document(app)


def registered_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        key = (route.method, route.resource.canonical)
        if key not in SELF_ROUTES:
            routes.add(key)
    return routes


def documented_operations(document) -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): operation
            for path, operations in document["paths"].items()
            for method, operation in operations.items() if method in METHODS}


def test_every_registered_route_is_documented(app, document):
    documented = documented_operations(document)
    routes = registered_routes(app)
    assert routes, "make_app registered no routes?"
    missing = sorted(key for key in routes
                     if key not in documented or documented[key].get(openapi.UNDOCUMENTED))
    assert not missing, (f"routes registered in router/rest.py but not described in "
                         f"router.openapi.OPERATIONS: {missing}")
    for key in routes:
        operation = documented[key]
        assert operation.get("summary") and operation.get("operationId"), key
        assert operation.get("responses"), key


def test_every_documented_operation_exists_in_the_app(app, document):
    served = registered_routes(app) | SELF_ROUTES
    stale = sorted(set(documented_operations(document)) - served)
    assert not stale, f"documented in router.openapi but not served by make_app: {stale}"
    # The hand-written table itself must not name routes the app lacks either.
    assert not sorted(set(openapi.OPERATIONS) - served)
    assert SELF_ROUTES <= {(r.method, r.resource.canonical) for r in app.router.routes()}


def test_operations_declare_their_inputs_and_statuses(document):
    ops = documented_operations(document)
    for (method, path), operation in ops.items():
        params = operation.get("parameters", [])
        in_path = {p["name"] for p in params if p["in"] == "path"}
        template = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        assert in_path == template, (method, path)
        if path.startswith(openapi.BASE) and not path.endswith(("/health", "/ready",
                                                                "/metrics", "/stats")):
            assert "X-Tenant-Id" in {p["name"] for p in params}, (method, path)
            assert "500" in operation["responses"] and "503" in operation["responses"]
        if "requestBody" in operation:
            assert method in ("POST", "PUT", "DELETE", "PATCH"), (method, path)
            assert "413" in operation["responses"], (method, path)
    insert = ops[("POST", "/api/v1/datasets/{dataset_id}/vectors")]
    assert "201" in insert["responses"] and "409" in insert["responses"]
    assert "Idempotency-Key" in {p["name"] for p in insert["parameters"]}
    batch_delete = ops[("DELETE", "/api/v1/datasets/{dataset_id}/vectors/batch")]
    assert "Idempotency-Key" in {p["name"] for p in batch_delete["parameters"]}
    assert "201" in ops[("POST", "/api/v1/datasets")]["responses"]
    for route in (("POST", "/api/v1/datasets/{dataset_id}/search"),
                  ("PUT", "/api/v1/datasets/{dataset_id}/vectors/{vector_id}")):
        assert "requestBody" in ops[route], route
    listing = {p["name"] for p in ops[("GET", "/api/v1/datasets/{dataset_id}/vectors")][
        "parameters"]}
    assert {"page_size", "page_token", "include_values"} <= listing
    assert {"page_size", "page_token"} <= {p["name"] for p in ops[("GET", "/api/v1/datasets")][
        "parameters"]}


def test_security_schemes_match_router_auth(document):
    """The document names both credential headers router/auth.py reads, requires either one
    everywhere, and lifts the requirement exactly on the routes auth.DEFAULT_EXEMPT serves
    without credentials."""
    schemes = document["components"]["securitySchemes"]
    api_key = schemes["api-key"]
    assert (api_key["type"], api_key["in"], api_key["name"]) == ("apiKey", "header", "api-key")
    bearer = schemes["bearer"]
    assert bearer["type"] == "http" and bearer["scheme"] == "bearer"
    assert "API key" in bearer["bearerFormat"] and "JWT" in bearer["bearerFormat"]
    assert document["security"] == [{"api-key": []}, {"bearer": []}]
    exempt = set()
    for (method, path), operation in documented_operations(document).items():
        if "security" in operation:
            assert operation["security"] == [], (method, path)
            exempt.add((method, path))
            assert "401" not in operation["responses"], (method, path)
        else:
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
    assert exempt == {("GET", path) for path in auth.DEFAULT_EXEMPT
                      if path in document["paths"]}
    assert exempt == {("GET", "/api/v1/health"), ("GET", "/api/v1/ready"),
                      ("GET", "/api/v1/metrics")}


def test_schemas_follow_the_rest_json_mapping(document):
    schemas = document["components"]["schemas"]
    dataset = schemas["Dataset"]["properties"]
    assert dataset["vector_count"]["type"] == "integer"  # int64, rendered as a number
    assert dataset["created_at"] == {"type": "string", "format": "date-time"}
    assert dataset["metadata"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert schemas["Vector"]["properties"]["values"]["type"] == "array"
    assert schemas["SearchResult"]["properties"]["vector"] == {
        "$ref": "#/components/schemas/Vector"}
    assert schemas["VectorInput"]["additionalProperties"] is False
    error = schemas["Error"]["properties"]["error"]
    assert set(error["required"]) == {"type", "message", "retriable"}


def resolve(document, node):
    while "$ref" in node:
        _, _, kind, name = node["$ref"].split("/", 3)
        node = document["components"][kind][name]
    return node


def all_refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from all_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_refs(value)


def check_structure(document):
    """What openapi-spec-validator would check first, for machines without it."""
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] and document["info"]["version"]
    assert document["paths"]
    for path, operations in document["paths"].items():
        assert path.startswith("/")
        for method, operation in operations.items():
            assert method in METHODS, (path, method)
            assert operation["responses"], (path, method)
            for status in operation["responses"]:
                assert status == "default" or (status.isdigit() and len(status) == 3)
    ids = [op.get("operationId") for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for ref in set(all_refs(document)):
        assert ref.startswith("#/components/"), ref
        _, _, kind, name = ref.split("/", 3)
        assert name in document["components"][kind], f"dangling $ref {ref}"


def validate_document(document):
    try:
        from openapi_spec_validator import validate
    except ImportError:
        check_structure(document)
        return "structure"
    validate(document)
    check_structure(document)
    return "openapi-spec-validator"


def conforms(document, schema, value, where="$"):
    """A small JSON Schema check for the keywords router/openapi.py emits."""
    schema = resolve(document, schema)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        checks = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
                  "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
                  "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
                  "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert any(checks[k](value) for k in kinds), f"{where}: {value!r} is not {kinds}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            assert key in value, f"{where}: missing {key}"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                conforms(document, properties[key], item, f"{where}.{key}")
            elif extra is False:
                raise AssertionError(f"{where}: undocumented field {key!r}")
            elif isinstance(extra, dict):
                conforms(document, extra, item, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            conforms(document, schema["items"], item, f"{where}[{i}]")


def test_served_document_and_docs_page(cluster, document):
    root = cluster.rest.removesuffix("/api/v1")
    with httpx.Client(base_url=root, timeout=30) as client:
        served = client.get("/openapi.json")
        assert served.status_code == 200
        assert served.headers["content-type"].startswith("application/json")
        served_doc = served.json()
        validate_document(served_doc)
        assert served_doc == document, "the running router serves a different document"

        page = client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        text = page.text
        assert "<script src" not in text and "http://" not in text.replace(root, "") \
            and "https://" not in text, "the docs page must not load anything from outside"
        for path, operations in served_doc["paths"].items():
            assert path in text
            for operation in operations.values():
                assert operation["summary"] in text or \
                    operation["summary"].replace("'", "&#x27;") in text
        assert client.get("/api/v1/openapi.json").status_code == 404  # not under /api/v1


def test_live_responses_match_the_document(cluster):
    """Real bodies and statuses of a short session conform to what the document says."""
    root = cluster.rest.removesuffix("/api/v1")
    name = f"oas-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=root, timeout=30) as client:
        document = client.get("/openapi.json").json()

        def call(method, template, path, expect, **kwargs):
            response = client.request(method, path, **kwargs)
            assert response.status_code == expect, response.text
            operation = document["paths"][template][method.lower()]
            assert str(expect) in operation["responses"], (method, template, expect)
            documented = resolve(document, operation["responses"][str(expect)])
            schema = documented["content"]["application/json"]["schema"]
            conforms(document, schema, response.json(), f"{method} {template} {expect}")
            return response.json()

        ds = "/api/v1/datasets/{dataset_id}"
        call("POST", "/api/v1/datasets", "/api/v1/datasets", 201,
             json={"name": name, "dimensions": 3, "metadata": {"n": 1}})
        try:
            call("POST", "/api/v1/datasets", "/api/v1/datasets", 409,
                 json={"name": name, "dimensions": 3})
            call("POST", "/api/v1/datasets", "/api/v1/datasets", 400,
                 json={"name": name, "dimensions": 3, "bogus": 1})
            call("POST", ds + "/vectors", f"/api/v1/datasets/{name}/vectors", 201,
                 json={"vectors": [{"id": "a", "values": [1, 0, 0], "metadata": {"k": True}},
                                   {"id": "b", "values": [0, 1, 0], "content": "bee"}]},
                 headers={"Idempotency-Key": uuid.uuid4().hex})
            call("POST", ds + "/search", f"/api/v1/datasets/{name}/search", 200,
                 json={"query_vector": [1, 0, 0], "options": {"top_k": 2,
                                                              "include_metadata": True}})
            call("GET", ds, f"/api/v1/datasets/{name}", 200)
            call("GET", "/api/v1/datasets", "/api/v1/datasets", 200, params={"page_size": 5})
            call("GET", ds + "/vectors", f"/api/v1/datasets/{name}/vectors", 200,
                 params={"include_values": "true"})
            call("GET", ds + "/vectors/{vector_id}", f"/api/v1/datasets/{name}/vectors/a", 200)
            call("GET", ds + "/vectors/{vector_id}", f"/api/v1/datasets/{name}/vectors/zz", 404)
            call("PUT", ds + "/vectors/{vector_id}", f"/api/v1/datasets/{name}/vectors/b", 200,
                 json={"content": "bee 2"})
            call("DELETE", ds + "/vectors/{vector_id}", f"/api/v1/datasets/{name}/vectors/a",
                 200)
            call("DELETE", ds + "/vectors/batch", f"/api/v1/datasets/{name}/vectors/batch", 200,
                 json={"vector_ids": ["b", "c"]})
            call("GET", "/api/v1/health", "/api/v1/health", 200)
            call("GET", "/api/v1/stats", "/api/v1/stats", 200)
        finally:
            call("DELETE", ds, f"/api/v1/datasets/{name}", 200)
        call("DELETE", ds, f"/api/v1/datasets/{name}", 404)


def _refused(check, value) -> bool:
    from tributary import errors
    try:
        check(value)
    except errors.InvalidArgument:
        return True
    return False


def test_names_and_ids_valid_by_the_document_are_accepted_by_the_server(document):
    """The document's name and vector-id schemas promise no more than check_name and
    check_vector_id accept (schemathesis's ST202 would find the difference over HTTP);
    '.', '..' and '' are refused by both. The patterns are read with ECMA-262 semantics, as
    OpenAPI 3.1 says (jsonschema_rs), and generated from with hypothesis."""
    import jsonschema_rs
    from hypothesis import given, settings, strategies as st

    from tributary import validation

    parameters = {p["name"]: p["schema"] for operations in document["paths"].values()
                  for operation in operations.values() for p in operation.get("parameters", ())
                  if p["in"] == "path"}
    cases = [(parameters["dataset_id"], validation.check_name),
             (parameters["tenant_id"], lambda n: validation.check_name(n, "tenant id")),
             (parameters["vector_id"], validation.check_vector_id)]
    for schema, check in cases:
        validator = jsonschema_rs.validator_for(schema)
        for refused in ("", ".", ".."):
            if check is not validation.check_vector_id:
                assert not validator.is_valid(refused) and _refused(check, refused)

        @settings(max_examples=300, deadline=None, database=None)
        @given(st.from_regex(schema["pattern"].replace("$", r"\Z"), fullmatch=False))
        def valid_by_the_document_is_accepted(value):
            if validator.is_valid(value):
                assert not _refused(check, value), value

        valid_by_the_document_is_accepted()


def test_numbers_are_documented_as_numbers_only(document):
    """REST refuses a string where a number is expected (router/rest.py
    refuse_numeric_strings); the document types those fields as numbers, never strings."""
    import jsonschema_rs

    schemas = document["components"]["schemas"]
    create = jsonschema_rs.validator_for({**schemas["CreateDatasetBody"],
                                          "components": document["components"]})
    assert create.is_valid({"name": "n", "dimensions": 4})
    assert not create.is_valid({"name": "n", "dimensions": "4"})
    options = schemas["SearchOptionsInput"]["properties"]
    assert options["top_k"]["type"] == "integer"
    for name, schema in (("dimensions", schemas["CreateDatasetBody"]["properties"]["dimensions"]),
                         ("top_k", options["top_k"])):
        assert not jsonschema_rs.validator_for(schema).is_valid("5"), name
