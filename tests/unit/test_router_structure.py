"""The router's structure: no import cycles, policy never imports an adapter, and nothing
dispatches on a method-name string (router/DESIGN.md, "Where things live").

Run alone with: .venv/bin/python -m pytest -q tests/unit/test_router_structure.py
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import router
from proto import node_pb2
from router import operations, shard_client
from router.admission import GuardedCore

ROUTER_DIR = Path(router.__file__).parent
# Policy decides who may do what; it must not know how a request arrived.
POLICY = ("router.auth", "router.admission", "router.quotas", "router.operations",
          "router.input_guard")
ADAPTERS = ("router.rest", "router.grpc_api")


def _modules() -> dict[str, ast.Module]:
    return {f"router.{path.stem}": ast.parse(path.read_text(), str(path))
            for path in sorted(ROUTER_DIR.glob("*.py")) if path.stem != "__init__"}


def _imports(module: ast.Module, known: set[str]) -> set[str]:
    """The router modules `module` imports anywhere: at module level or inside a function."""
    found = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in known)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(tree, known) - {name} for name, tree in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_late_import_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_router_modules_import_each_other_without_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle in router/: {' -> '.join(cycle)}"


def test_policy_modules_never_import_the_adapters():
    graph = import_graph()
    wrong = {(policy, adapter) for policy in POLICY for adapter in ADAPTERS
             if adapter in graph[policy]}
    assert not wrong, f"policy imports an adapter: {sorted(wrong)}"


def _calls(tree: ast.Module):
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def test_no_shard_call_names_its_rpc_with_a_string():
    found = []
    for name, tree in _modules().items():
        for call in _calls(tree):
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr == "call" and any(
                    isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                    for arg in call.args):
                found.append(f"{name}:{call.lineno} {ast.unparse(call)[:60]}")
    assert not found, f"string-keyed shard calls: {found}"


def _rpc_method(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def test_shard_client_declares_one_typed_method_per_rpc_it_sends():
    declared = {name for name, member in vars(shard_client.ShardClient).items()
                if inspect.iscoroutinefunction(member)}
    assert "call" not in declared
    rpcs = set(node_pb2.DESCRIPTOR.services_by_name["ShardNode"].methods_by_name)
    assert {_rpc_method(name) for name in declared} <= rpcs
    assert {"write", "get", "search", "text_search", "stats", "list", "soft_delete", "restore",
            "compact", "drop_shard", "prepare", "commit", "abort", "copy_status"} <= declared
    for name in declared:  # the gRPC client implements every declared method
        assert inspect.iscoroutinefunction(getattr(shard_client.GrpcShardClient, name)), name


def test_no_check_compares_against_an_operation_name_string():
    """Policy reads descriptors; a `name == "insert_vectors"` or an `OPS = {"get_dataset": ...}`
    table keyed by strings would bring back the string dispatch."""
    names = set(operations.BY_NAME)
    found = []
    for module, tree in _modules().items():
        for node in ast.walk(tree):
            constants = []
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    constants += [c for c in ast.walk(side) if isinstance(c, ast.Constant)]
            elif isinstance(node, ast.Dict):
                constants += [k for k in node.keys if isinstance(k, ast.Constant)]
            hits = [c.value for c in constants if isinstance(c.value, str) and c.value in names]
            if hits:
                found.append(f"{module}:{node.lineno} {hits}")
    assert not found, f"operation names used as dispatch keys: {found}"


def test_the_core_is_reached_by_descriptor_only_in_one_place():
    """getattr on the core with a computed name happens only where a descriptor is bound to its
    core coroutine, and in the fail-closed fallback for undescribed members."""
    allowed = {("router.admission", "_core_function"), ("router.admission", "__getattr__")}
    core_like = {"self.core", "self.raw", "core", "guarded", "self.guarded"}
    found = []
    for module, tree in _modules().items():
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for call in _calls(function):
                if isinstance(call.func, ast.Name) and call.func.id == "getattr" \
                        and len(call.args) >= 2 \
                        and not isinstance(call.args[1], ast.Constant) \
                        and ast.unparse(call.args[0]) in core_like \
                        and (module, function.name) not in allowed:
                    found.append(f"{module}:{call.lineno} in {function.name}")
    assert not found, f"string-keyed dispatch on the core: {found}"


def test_every_operation_is_a_method_of_the_guarded_core_not_a_fallback():
    for operation in operations.OPERATIONS:
        assert operation.name in vars(GuardedCore), operation.name
