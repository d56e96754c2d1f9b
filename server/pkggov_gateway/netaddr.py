"""Small facts about network addresses, shared by configuration and the TLS adapter."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(listen: str) -> bool:
    """True when the ``HOST:PORT`` listen address only accepts local connections.

    Loopback hosts are ``localhost``, 127.0.0.0/8 and ``::1`` (bracketed or not, and the
    IPv4-mapped ``::ffff:127.x.y.z``). Wildcards (``0.0.0.0``, ``[::]``) and names are not.
    """
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit():
        return False
    host = host.removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
