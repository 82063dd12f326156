"""`tributary admin keys ...` and `tributary admin tenants ...`: the admin REST API
(router/admin.py) from the command line. Standard library only.

    tributary admin keys create --tenant acme [--read-only] [--datasets a,b] [--description d]
    tributary admin keys create --admin
    tributary admin keys list [--tenant acme]
    tributary admin keys revoke KEY_ID
    tributary admin tenants create acme [--name N] [--quota max_vectors=10000 ...]
    tributary admin tenants list | get ID | stats ID | delete ID
    tributary admin tenants quotas ID max_vectors=100000 max_batch_size=null
    tributary admin tenants status ID suspended

The router is --url (env TRIBUTARY_URL, default http://127.0.0.1:8000) and the admin credential
--api-key (env TRIBUTARY_API_KEY), sent as `Authorization: Bearer`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request


def _request(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> dict:
    url = args.url.rstrip("/").removesuffix("/api/v1") + path
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = f"Bearer {args.api_key}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"tributary admin: {http_error_message(exc)}") from None
    except urllib.error.URLError as exc:
        raise SystemExit(f"tributary admin: cannot reach {url}: {exc.reason}") from None


def http_error_message(exc: urllib.error.HTTPError) -> str:
    """"<status> <type>: <message>" from the API's error body, else the status and reason."""
    try:
        detail = json.loads(exc.read())["error"]
        return f"{exc.code} {detail['type']}: {detail['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{exc.code} {exc.reason}"


def _print(doc: dict) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True))


def _quota_pairs(pairs: list[str]) -> dict:
    quotas = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"quota '{pair}' must look like name=value (value: a number or "
                             "null)")
        if value in ("null", "none", ""):
            quotas[name] = None
        else:
            try:
                quotas[name] = int(value)
            except ValueError:
                try:
                    quotas[name] = float(value)
                except ValueError:
                    raise SystemExit(f"quota '{pair}': {value!r} is not a number") from None
    return quotas


def _keys(args: argparse.Namespace) -> None:
    if args.keys_command == "create":
        body: dict = {"access": "read_only" if args.read_only else "read_write"}
        if args.admin:
            body["role"] = "admin"
        else:
            if not args.tenant:
                raise SystemExit("keys create needs --tenant ID (or --admin)")
            body["tenant_id"] = args.tenant
        if args.datasets:
            body["datasets"] = [d for d in args.datasets.split(",") if d]
        if args.description:
            body["description"] = args.description
        _print(_request(args, "POST", "/admin/keys", body))
    elif args.keys_command == "list":
        query = f"?{urllib.parse.urlencode({'tenant_id': args.tenant})}" if args.tenant else ""
        _print(_request(args, "GET", f"/admin/keys{query}"))
    else:
        _print(_request(args, "DELETE", f"/admin/keys/{urllib.parse.quote(args.key_id)}"))


def _tenants(args: argparse.Namespace) -> None:
    command = args.tenants_command
    if command == "list":
        _print(_request(args, "GET", "/admin/tenants"))
        return
    path = f"/admin/tenants/{urllib.parse.quote(args.tenant_id, safe='')}"
    if command == "create":
        body = {"tenant_id": args.tenant_id, "quotas": _quota_pairs(args.quota)}
        if args.name:
            body["name"] = args.name
        if args.status:
            body["status"] = args.status
        _print(_request(args, "POST", "/admin/tenants", body))
    elif command == "get":
        _print(_request(args, "GET", path))
    elif command == "stats":
        _print(_request(args, "GET", f"{path}/stats"))
    elif command == "delete":
        _print(_request(args, "DELETE", path))
    elif command == "quotas":
        _print(_request(args, "PUT", f"{path}/quotas", _quota_pairs(args.quota)))
    elif command == "status":
        _print(_request(args, "PUT", f"{path}/status", {"status": args.status}))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("TRIBUTARY_URL",
                                                        "http://127.0.0.1:8000"),
                        help="a router's REST address (env TRIBUTARY_URL)")
    parser.add_argument("--api-key", default=os.environ.get("TRIBUTARY_API_KEY"),
                        help="an admin API key or JWT (env TRIBUTARY_API_KEY)")
    parser.add_argument("--timeout", type=float, default=30.0)


def add_parsers(admin_sub) -> None:
    """Adds `keys` and `tenants` under `tributary admin`."""
    keys = admin_sub.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    p = keys_sub.add_parser("create", help="create a key (printed once)")
    p.add_argument("--tenant", help="the tenant the key is scoped to")
    p.add_argument("--admin", action="store_true", help="an admin key (every tenant)")
    p.add_argument("--read-only", action="store_true", help="refuse writes")
    p.add_argument("--datasets", help="comma-separated allow-list of dataset names")
    p.add_argument("--description", default="")
    _common(p)
    p.set_defaults(func=_keys)
    p = keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    p.add_argument("--tenant")
    _common(p)
    p.set_defaults(func=_keys)
    p = keys_sub.add_parser("revoke", help="revoke a key by its id")
    p.add_argument("key_id")
    _common(p)
    p.set_defaults(func=_keys)

    tenants = admin_sub.add_parser("tenants", help="tenants, quotas and statuses")
    tenants_sub = tenants.add_subparsers(dest="tenants_command", required=True)
    p = tenants_sub.add_parser("create")
    p.add_argument("tenant_id")
    p.add_argument("--name")
    p.add_argument("--status")
    p.add_argument("--quota", action="append", default=[], help="name=value, repeatable")
    _common(p)
    p.set_defaults(func=_tenants)
    p = tenants_sub.add_parser("list")
    _common(p)
    p.set_defaults(func=_tenants)
    for name in ("get", "stats", "delete"):
        p = tenants_sub.add_parser(name)
        p.add_argument("tenant_id")
        _common(p)
        p.set_defaults(func=_tenants)
    p = tenants_sub.add_parser("quotas", help="change quotas: name=value ... (null: unlimited)")
    p.add_argument("tenant_id")
    p.add_argument("quota", nargs="+")
    _common(p)
    p.set_defaults(func=_tenants)
    p = tenants_sub.add_parser("status", help="active | suspended | read_only | "
                                              "pending_deletion")
    p.add_argument("tenant_id")
    p.add_argument("status")
    _common(p)
    p.set_defaults(func=_tenants)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `tributary admin keys|tenants ...`")
