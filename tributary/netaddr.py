"""Address helpers shared by the servers."""

from __future__ import annotations

import ipaddress


def is_loopback(address: str) -> bool:
    """True for host:port addresses on loopback (127.0.0.0/8, ::1, localhost)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
