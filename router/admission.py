"""One admission step for every public operation, and the core behind it.

`admit(operation, principal, request, quotas)` runs, in this order, everything that stands
between an authenticated caller and the core, driven by the operation's descriptor
(router/operations.py):

1. authorization (router/auth.py): the tenant comes from the credential (naming another is
   403), the credential's scope and write access, the dataset allow-list against every dataset
   the request names, and no carried vector naming another tenant;
2. the input guard: the descriptor's `validate` (router/input_guard.py), 400;
3. quotas (router/quotas.py): tenant status, rate, sizes, volume and concurrency, 403 / 429.

What needs a dataset's record (a vector's length against the dataset's dimensions, immutable
fields, page tokens) is checked by the core itself once it has resolved the name.

`GuardedCore` is what both adapters hold: `await guarded.run(operation, request)` admits and
then calls the core coroutine the descriptor names. A core coroutine without a descriptor is
admin-only while auth is on (fail closed).
"""

from __future__ import annotations

import inspect
from typing import Any

from consensus.state import DEFAULT_TENANT
from proto import deeplake_service_pb2 as pb
from router import auth
from router.auth import Principal
from router.operations import INSERT_VECTORS, OPERATIONS, Kind, Operation, Scope
from tributary import errors, limits, validation


async def admit(operation: Operation, principal: Principal, request, quotas=None
                ) -> tuple[str, Any]:
    """Admits `request` for `operation` on behalf of `principal`; returns (tenant, quota slot
    or None). The caller releases the slot when the core is done (`Slot.release`). Raises
    PermissionDenied (403), InvalidArgument (400) or ResourceExhausted (429, with its
    Retry-After set on gRPC)."""
    tenant = auth.resolve_tenant(principal, request.tenant_id)
    if principal.kind == "tenant":
        request.tenant_id = tenant
    tenant = validation.check_name(tenant or DEFAULT_TENANT, "tenant id")
    if operation.scope is Scope.ADMIN:
        auth.require_admin(principal, write=True)
    if operation.writes:
        auth.check_write(principal, operation.name)
    for dataset in operation.datasets(request):
        auth.check_dataset(principal, dataset, operation.writes)
    _check_carried_tenants(operation, request, tenant)
    operation.validate(request)
    slot = None
    if quotas is not None:
        try:
            slot = await quotas.admit(tenant, operation, request)
        except errors.ResourceExhausted as exc:
            auth.set_retry_after(exc)
            raise
    return tenant, slot


def _check_carried_tenants(operation: Operation, request, tenant: str) -> None:
    """Vectors carry a tenant_id field too; one naming another tenant is refused."""
    for vector in operation.vectors(request):
        if vector.tenant_id and vector.tenant_id != tenant:
            raise errors.PermissionDenied(f"vector '{vector.id}' names tenant "
                                          f"'{vector.tenant_id}'; the request acts for "
                                          f"tenant '{tenant}'")


class GuardedCore:
    """RouterCore behind the admission step. The adapters hold this object; `raw` is the core
    itself (for the admin API). Each descriptor is also a method of the same name
    (`guarded.search_vectors(request)`), which is `run` with that descriptor."""

    def __init__(self, core, authenticator: auth.Authenticator, quotas=None):
        self.raw = core
        self.authenticator = authenticator
        self.quotas = quotas

    def principal(self) -> Principal:
        principal = auth.current_principal()
        if principal is None:
            # Reached without passing an adapter's edge: only acceptable with auth off.
            if not self.authenticator.enabled:
                return auth.OPEN
            raise errors.Unauthenticated("missing credentials")
        return principal

    def _core_function(self, operation: Operation):
        """The core coroutine that serves `operation`: the one its descriptor names."""
        return getattr(self.raw, operation.name)

    async def run(self, operation: Operation, request, *args, **kwargs):
        """Admits `request` for the unary `operation`, then runs the core on it."""
        assert operation.kind is Kind.UNARY, operation
        function = self._core_function(operation)
        principal = self.principal()
        tenant, slot = await admit(operation, principal, request, self.quotas)
        try:
            result = await function(request, *args, **kwargs)
            if slot is not None:
                slot.succeeded(result)
        finally:
            if slot is not None:
                slot.release()
        if operation.narrows_listing and principal.datasets is not None:
            result = self._narrow_listing(request, principal, tenant)
        return result

    async def stream(self, operation: Operation, request, *args, **kwargs):
        """Admits `request` for the server-streaming `operation`; yields the core's answers."""
        assert operation.kind is Kind.SERVER_STREAM, operation
        function = self._core_function(operation)
        _, slot = await admit(operation, self.principal(), request, self.quotas)
        try:
            async for item in function(request, *args, **kwargs):
                yield item
        finally:
            if slot is not None:
                slot.release()

    async def bulk(self, operation: Operation, batches, *args, **kwargs):
        """A client stream of InsertVectorsRequest batches: each batch is admitted as one
        INSERT_VECTORS call (tenant, allow-list, sizes, quotas) as the core pulls it."""
        assert operation.kind is Kind.CLIENT_STREAM, operation
        function = self._core_function(operation)
        held: dict[str, Any] = {"slot": None, "first": None, "size": 0}

        def finish_previous(succeeded: bool) -> None:
            slot = held["slot"]
            if slot is not None:
                if succeeded:
                    slot.succeeded(pb.InsertVectorsResponse(inserted_count=held["size"]))
                slot.release()
                held["slot"] = None

        async def checked():
            async for batch in batches:
                # The core pulls batch n+1 only after batch n committed.
                finish_previous(True)
                first = held["first"] = held["first"] or batch
                if not batch.dataset_id:
                    batch.dataset_id = first.dataset_id
                if not batch.tenant_id:
                    batch.tenant_id = first.tenant_id
                _, held["slot"] = await admit(INSERT_VECTORS, self.principal(), batch,
                                              self.quotas)
                held["size"] = len(batch.vectors)
                yield batch

        try:
            result = await function(checked(), *args, **kwargs)
            finish_previous(True)
            return result
        finally:
            finish_previous(False)

    async def health(self):
        """Exempt from authentication (router/auth.py DEFAULT_EXEMPT), never admitted."""
        return await self.raw.health()

    async def service_stats(self):
        """Open to every credential; a tenant sees its own numbers, never other tenants'
        names or counts."""
        stats = await self.raw.service_stats()
        principal = self.principal()
        if principal.kind != "tenant":
            return stats
        mine = stats.get("datasets_per_tenant", {}).get(principal.tenant_id, 0)
        stats = {k: v for k, v in stats.items()
                 if k not in ("datasets_per_tenant", "tenants", "datasets", "catalog_version")}
        stats.update(tenant_id=principal.tenant_id, datasets=mine)
        return stats

    def __getattr__(self, name: str):
        """Fail closed: reached only for what is neither a descriptor's method nor one of the
        above. A core coroutine without a descriptor is admin-only while auth is on; other
        members (and private ones) are served as they are."""
        attr = getattr(self.raw, name)
        if name.startswith("_"):
            return attr
        if inspect.iscoroutinefunction(attr):
            return _AdminOnly(self, name, attr)
        if inspect.isasyncgenfunction(attr):
            return _AdminOnlyStream(self, name, attr)
        return attr

    def _narrow_listing(self, request, principal: Principal, tenant: str):
        """A dataset allow-list also narrows the listing (and its counts and pages)."""
        allowed = [r for r in self.raw.catalog.state.datasets_of(tenant)
                   if r.name in principal.datasets]
        page_size = request.page_size or limits.list_page_size_max
        after = [r for r in allowed if r.name > request.page_token]
        page = after[:page_size]
        return pb.ListDatasetsResponse(
            datasets=[self.raw.to_dataset_pb(r) for r in page], total_count=len(allowed),
            next_page_token=page[-1].name if len(after) > page_size and page else "")


class _AdminOnly:
    """A core coroutine that no descriptor describes: tenants are refused."""

    def __init__(self, guarded: GuardedCore, name: str, function):
        self.guarded, self.name, self.function = guarded, name, function

    async def __call__(self, *args, **kwargs):
        _refuse_tenants(self.guarded, self.name)
        return await self.function(*args, **kwargs)


class _AdminOnlyStream(_AdminOnly):
    async def __call__(self, *args, **kwargs):
        _refuse_tenants(self.guarded, self.name)
        async for item in self.function(*args, **kwargs):
            yield item


def _refuse_tenants(guarded: GuardedCore, name: str) -> None:
    if guarded.principal().kind == "tenant":
        raise errors.PermissionDenied(f"'{name}' is not open to tenant credentials yet")


def _method_for(operation: Operation):
    if operation.kind is Kind.UNARY:
        async def method(self, request, *args, **kwargs):
            return await self.run(operation, request, *args, **kwargs)
    elif operation.kind is Kind.SERVER_STREAM:
        def method(self, request, *args, **kwargs):
            return self.stream(operation, request, *args, **kwargs)
    else:
        async def method(self, batches, *args, **kwargs):
            return await self.bulk(operation, batches, *args, **kwargs)
    method.__name__ = method.__qualname__ = operation.name
    method.__doc__ = f"`run` with operations.{operation.name.upper()}."
    return method


for _operation in OPERATIONS:
    setattr(GuardedCore, _operation.name, _method_for(_operation))
del _operation
