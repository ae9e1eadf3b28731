"""The lean transport's socket-level helpers: addresses to connect to, TLS failure reasons,
and whether an idle connection has heard from its server (a close, usually)."""

from __future__ import annotations

import ipaddress
import select
import socket
import ssl
import sys

import anyio


async def addresses(host: str, port: int) -> list[tuple[int, str]]:
    """An IP literal as it is (no resolver thread hop); a name resolved at each connect."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [(int(info[0]), str(info[4][0])) for info in found]
    return [(socket.AF_INET6 if version == 6 else socket.AF_INET, host)]


def ssl_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason without the file/line noise: "certificate verify failed: ..."."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    return exc.reason or exc.strerror or str(exc)


def readable(sock: socket.socket) -> bool:
    try:
        if sys.platform == "win32" or not hasattr(select, "poll"):
            return bool(select.select([sock], [], [], 0)[0])
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
