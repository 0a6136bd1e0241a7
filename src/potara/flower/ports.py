"""Free loopback ports for a local deployment (``scripts/deploy_local.sh -p``): a SuperLink and its SuperNodes
need a block of consecutive ones."""

from __future__ import annotations

import socket


def free_port_block(count: int) -> int:
    """A base port p with p..p+count-1 free on 127.0.0.1 (checked by binding each)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count < 65000 and all(_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no block of free ports on 127.0.0.1")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
