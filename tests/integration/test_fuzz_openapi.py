"""Property-based fuzzing of the REST API against its own OpenAPI document (schemathesis).

A cluster with auth on (`tributary up --api-key` and an HS256 JWT secret) serves the document
at GET /openapi.json; schemathesis generates requests for every operation in it, valid and
invalid by the document (coverage phase: boundary values and one mutation at a time; fuzzing
phase: random cases). No response may be a 5xx: bad input is the client's fault and must come
back as a 4xx with the error JSON. The responses must also agree with the document: a
documented status, the documented content type, a body that matches the documented schema, and
an operation that declares a security requirement must refuse a request without credentials.

The schema is built at collection time from router.openapi.build_document (schemathesis
generates one test per operation then), and the `target` fixture asserts that the live router
serves exactly that document. schemathesis.pytest.from_fixture, which would load it from the
router at run time, reads `Node._nodeid`, which pytest 9 no longer has.

So that generated requests get past auth and reach real handlers, every fuzzing-phase case draws
a credential (the admin key, a tenant's API key in the `api-key` header, the tenant's JWT, or
none) and, half of the time, is aimed at the real tenant's dataset: its path names the dataset
(or a vector in it, or a spare tenant on the admin API). Explicit cases (the coverage and
examples phases) carry the admin key. A case that deletes or soft-deletes the real dataset, a
vector or the spare tenant is followed by putting it back.

`make test` runs the fuzzing phase with 30 cases per operation (TRIBUTARY_FUZZ_EXAMPLES) and a
fixed seed; `make fuzz` runs 200 per operation and the coverage phase
(TRIBUTARY_FUZZ_COVERAGE=1). The counts are printed at the end of the run: "fuzz cases run N,
5xx M" and how many cases got each status.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import Counter

import httpx
import jwt
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import CoveragePhaseData
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from cluster import Cluster
from router.openapi import STATEFUL_RULES, build_document
from router.rest import make_app

pytestmark = pytest.mark.integration

# Fuzzing-phase cases per operation.
EXAMPLES = int(os.environ.get("TRIBUTARY_FUZZ_EXAMPLES", "30"))
# The coverage phase: about 2000 deterministic cases (a minute here), so only in `make fuzz`.
COVERAGE = os.environ.get("TRIBUTARY_FUZZ_COVERAGE", "0") == "1"
SEED = 20260107

ADMIN_KEY = "admin-" + uuid.uuid4().hex
JWT_SECRET = "jwt-secret-" + "f" * 32
TENANT = "fuzz"
SPARE_TENANT = "fuzz-spare"
DATASET = "fuzz-docs"
VECTOR = "v1"
DIM = 4
# Path parameter -> the real object a case aimed at the target names.
TARGET_PATH = {"dataset_id": DATASET, "vector_id": VECTOR, "tenant_id": SPARE_TENANT}


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


# Credential name -> the headers that carry it. The tenant's API key exists only once the
# cluster runs: the `target` fixture adds it before any case is generated.
CREDENTIALS: dict[str, dict[str, str]] = {
    "admin": bearer(ADMIN_KEY),
    "tenant jwt": bearer(jwt.encode({"tenant_id": TENANT, "exp": time.time() + 6 * 3600},
                                    JWT_SECRET, algorithm="HS256")),
    "none": {},
}
CREDENTIAL_NAMES = sorted([*CREDENTIALS, "tenant key"])
CREDENTIAL_HEADERS = ("authorization", "api-key")  # as router/auth.py reads them

# The document says what the server enforces: a request valid by it is not refused with a 400
# (ST202, positive_data_acceptance), except for the rules that depend on stored state or tie
# fields together, which the document lists (router.openapi.STATEFUL_RULES) and whose 400s name
# them. A 404 (a name that does not exist), 401/403 and 409 stay allowed, as schemathesis
# allows them. A method the document does not declare for a path is a 405 with an Allow header
# (ST204, unsupported_method; schemathesis probes it in the coverage phase, so `make fuzz`, and
# test_undeclared_methods_are_405_with_an_allow_header probes every path in `make test`).
STATEFUL_REFUSAL = re.compile("|".join(f"(?:{pattern})" for pattern, _ in STATEFUL_RULES))


@schemathesis.check
def positive_data_acceptance_but_stateful_rules(ctx, response, case):
    """positive_data_acceptance (ST202), except a 400 that names a documented stateful rule."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code == 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = ""
            if STATEFUL_REFUSAL.search(message):
                return None
        raise


# Not checked, and why:
# - negative_data_rejection: the handlers are more lenient than the document in places (a PUT
#   without a body is an empty update, `include_values` reads anything but true/1 as false, an
#   empty `description` of any JSON type is no description, a name may hold Unicode letters
#   the pattern leaves out), so a request the document calls invalid may rightly succeed.
# - missing_required_header: the document declares no required header besides credentials,
#   which ignored_auth covers.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, ignored_auth, positive_data_acceptance_but_stateful_rules,
          unsupported_method]


class DummyCore:
    """make_app only stores the core; building the router needs no cluster."""


DOCUMENT = build_document(make_app(DummyCore()))
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": EXAMPLES, "database": "none",
                   # Credentials come from the hooks below, never generated.
                   "with-security-parameters": False},
    "phases": {"coverage": {"enabled": COVERAGE}, "stateful": {"enabled": False}},
}))


def with_credential(case, name: str):
    """The case carrying credential `name` and no other."""
    headers = {k: v for k, v in (case.headers or {}).items()
               if k.lower() not in CREDENTIAL_HEADERS}
    case.headers = {**headers, **CREDENTIALS[name]}
    return case


def credential_of(case) -> dict[str, str]:
    """The credential headers the case carries."""
    return {k: v for k, v in (case.headers or {}).items() if k.lower() in CREDENTIAL_HEADERS}


def aimed(case):
    """The case with its path naming the real dataset, vector or spare tenant."""
    for name in case.path_parameters or {}:
        if name in TARGET_PATH:
            case.path_parameters[name] = TARGET_PATH[name]
    case.headers = {**(case.headers or {}), "X-Tenant-Id": TENANT}
    return case


@schema.hook
def before_add_examples(context, examples):
    for case in examples:
        with_credential(case, "admin")


@schema.hook
def map_case(context, case):
    """Coverage-phase cases carry the admin key, and those that vary the body or the query are
    aimed at the target, so that the varied part reaches the handler past the dataset lookup.
    (Fuzzing-phase cases pass here too, on their way to flatmap_case.)"""
    varied = case.meta.phase.data if case.meta is not None else None
    if isinstance(varied, CoveragePhaseData) and \
            varied.parameter_location not in (ParameterLocation.PATH, ParameterLocation.HEADER):
        aimed(case)
    return with_credential(case, "admin")


@schema.hook
def flatmap_case(context, case):
    return st.tuples(st.sampled_from(CREDENTIAL_NAMES), st.booleans()).map(
        lambda drawn: with_credential(aimed(case) if drawn[1] else case, drawn[0]))


class Target:
    """The real tenant, its dataset and a spare tenant that fuzzed requests are aimed at."""

    def __init__(self, cluster: Cluster):
        self.root = cluster.rest.removesuffix("/api/v1")
        self.http = httpx.Client(base_url=self.root, headers=bearer(ADMIN_KEY), timeout=30)
        for tenant in (TENANT, SPARE_TENANT):
            self._ok(self.http.post("/admin/tenants", json={"tenant_id": tenant}))
        key = self._ok(self.http.post("/admin/keys", json={"tenant_id": TENANT}))["key"]
        CREDENTIALS["tenant key"] = {"api-key": key}
        self.restore_dataset()

    @staticmethod
    def _ok(response: httpx.Response) -> dict:
        assert response.status_code in (200, 201), response.text
        return response.json()

    def restore_dataset(self) -> None:
        tenant = {"X-Tenant-Id": TENANT}
        if self.http.get(f"/api/v1/datasets/{DATASET}", headers=tenant).status_code == 404:
            self._ok(self.http.post("/api/v1/datasets", headers=tenant,
                                    json={"name": DATASET, "dimensions": DIM}))
        self._ok(self.http.post(f"/api/v1/datasets/{DATASET}/vectors", headers=tenant, json={
            "overwrite": True,
            "vectors": [{"id": VECTOR, "values": [0.1, 0.2, 0.3, 0.4], "content": "hello"},
                        {"id": "v2", "values": [0.4, 0.3, 0.2, 0.1], "content": "world"}]}))

    def restore_spare_tenant(self) -> None:
        if self.http.get(f"/admin/tenants/{SPARE_TENANT}").status_code == 404:
            self._ok(self.http.post("/admin/tenants", json={"tenant_id": SPARE_TENANT}))

    def repair(self, case, status: int) -> None:
        """Puts back what a successful case aimed at the target removed."""
        if status >= 300 or case.method not in ("DELETE", "POST"):
            return
        params = case.path_parameters or {}
        if params.get("dataset_id") == DATASET and (
                case.method == "DELETE" or case.path.endswith("/soft-delete")):
            self.restore_dataset()
        elif case.method == "DELETE" and params.get("tenant_id") == SPARE_TENANT:
            self.restore_spare_tenant()


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("fuzz-cluster"), meta=1, nodes=1, routers=1,
                extra_args=["--api-key", ADMIN_KEY],
                env={"TRIBUTARY_JWT_SECRET": JWT_SECRET}).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def target(up):
    t = Target(up)
    served = t.http.get("/openapi.json")
    assert served.status_code == 200 and served.json() == DOCUMENT, \
        "the router serves a different document than the one fuzzed"
    yield t
    t.http.close()


@pytest.fixture(scope="module")
def tally(summary_lines):
    """Cases sent, by response status."""
    statuses: Counter = Counter()
    yield statuses
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    summary_lines.append(f"fuzz cases run {statuses.total()}, 5xx {server_errors} (by status: "
                         + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())) + ")")


@schema.parametrize()
def test_no_server_errors_and_responses_match_the_document(case, target, tally):
    response = case.call(base_url=target.root)
    tally[response.status_code] += 1
    target.repair(case, response.status_code)
    # Naming the credential makes it explicit auth: ignored_auth then checks that the same
    # request without it, or with a wrong one, is refused.
    case.validate_response(response, checks=CHECKS, headers=credential_of(case))


# Methods schemathesis's coverage phase sends to every path (DEFAULT_UNEXPECTED_METHODS).
PROBED_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "TRACE", "QUERY")


def test_undeclared_methods_are_405_with_an_allow_header(target):
    """ST204 at `make test` size: every path of the document answers a method it does not
    declare with 405 and an Allow header naming the declared ones (RFC 9110 15.5.6)."""
    templates = {path: re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "$")
                 for path in DOCUMENT["paths"]}
    wrong = []
    for path, operations in DOCUMENT["paths"].items():
        declared = {method.upper() for method in operations}
        concrete = re.sub(r"\{(\w+)\}", lambda m: TARGET_PATH.get(m.group(1), "x"), path)
        for method in PROBED_METHODS:
            # Another template may serve this path with this method (GET .../vectors/batch is
            # GET .../vectors/{vector_id} for the id "batch").
            if method in declared or any(
                    method.lower() in DOCUMENT["paths"][other] and pattern.match(concrete)
                    for other, pattern in templates.items() if other != path):
                continue
            response = target.http.request(method, concrete, headers={"X-Tenant-Id": TENANT})
            allowed = {m.strip() for m in response.headers.get("Allow", "").split(",")
                       if m.strip()}
            if response.status_code != 405 or not declared <= allowed:
                wrong.append(f"{method} {concrete}: {response.status_code}, "
                             f"Allow: {response.headers.get('Allow')!r}")
    assert not wrong, "\n".join(wrong)
