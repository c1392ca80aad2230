"""Test-only resolver override, loaded by the suite's worker and API processes (``PYTHONPATH``).

``LORAVET_TEST_RESOLVE`` maps names to addresses (JSON ``{"name": ["addr", ...]}``): those names
resolve there and nowhere else, without any DNS traffic. As a second guard, every ``connect`` to an
address other than loopback is refused in these processes and written to
``LORAVET_TEST_CONNECT_LOG``, so a broken address policy shows up as a logged attempt, never as
traffic leaving the machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket

_MAP = json.loads(os.environ.get("LORAVET_TEST_RESOLVE", "{}"))
_LOG = os.environ.get("LORAVET_TEST_CONNECT_LOG")

if _MAP:
    _real_getaddrinfo = socket.getaddrinfo

    def _getaddrinfo(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.rstrip(".").lower() in _MAP:
            out = []
            for addr in _MAP[name.rstrip(".").lower()]:
                fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
                sockaddr = (
                    (addr, int(port or 0), 0, 0)
                    if fam == socket.AF_INET6
                    else (addr, int(port or 0))
                )
                out.append((fam, socket.SOCK_STREAM, 6, "", sockaddr))
            return out
        return _real_getaddrinfo(host, port, *args, **kwargs)

    socket.getaddrinfo = _getaddrinfo

    _real_connect = socket.socket.connect

    def _connect(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None:
            try:
                ip = ipaddress.ip_address(str(host).split("%", 1)[0])
            except ValueError:
                ip = None
            if ip is not None and not ip.is_loopback:
                if _LOG:
                    with open(_LOG, "a") as f:
                        f.write(f"{host}\n")
                raise ConnectionRefusedError(f"test sandbox: connect to {host} blocked")
        return _real_connect(self, address)

    socket.socket.connect = _connect  # type: ignore[method-assign]  # the sandbox patches it
