"""A Ray address checked before any work: an unreachable cluster is one line, exit 2.

`ray.init` against a wrong address retries for 20 to 40 seconds and then raises a long
traceback. Three quick questions tell first: does the port accept a connection, does it
answer in HTTP/2 (Ray's GCS is a gRPC server; an SSH or web port is not), and does a GCS
client get a cluster id from it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from optimizer.errors import BadInput

ENV = "OPTIMIZER_RAY"
CONNECT_TIMEOUT_S = 5.0
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # written by `ray start --head`


def resolve(address: str) -> str:
    """host:port of the head's GCS, from `host:port`, `host` (port 6379) or `auto`."""
    given = address.strip()
    if given.startswith("ray://"):
        raise BadInput(f"--ray {given}: Ray Client addresses (ray://) run the driver on the "
                       "head, away from this machine's cache and output folder; join this "
                       "machine to the cluster (`ray start --address HEAD:6379`) and give "
                       "HEAD:6379")
    if given == "auto":
        found = os.environ.get("RAY_ADDRESS", "").strip()
        if not found and CURRENT_CLUSTER.is_file():
            found = CURRENT_CLUSTER.read_text().strip()
        if not found or found == "auto":
            raise BadInput("--ray auto: no Ray cluster is running on this machine (no "
                           f"RAY_ADDRESS, no {CURRENT_CLUSTER}); start one with `ray start "
                           "--head` or give its HEAD:PORT")
        given = found
    host, sep, port = given.rpartition(":")
    if not sep:
        host, port = given, "6379"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--ray {address!r}: give the head's address as HOST:PORT (the port "
                       "`ray start --head` printed, 6379 by default), or `auto`")
    return f"{host}:{port}"


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _unreachable(address: str, reason: str) -> BadInput:
    return BadInput(f"--ray {address}: no Ray head answers there ({reason}); is `ray start "
                    "--head` running, and is its port open to this machine?")


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            conn.sendall(H2_PREFACE)
            reply = conn.recv(9)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            reason = f"no answer in {timeout:.0f} s"
        raise _unreachable(address, reason) from None
    if len(reply) < 9 or reply[3] != 0x4:  # a SETTINGS frame comes first from gRPC
        raise _unreachable(address, "the port does not speak gRPC")
    from ray._raylet import GcsClient

    from optimizer.quiet import native_stderr_captured

    failure = None
    with native_stderr_captured():  # the client's C++ retry lines
        try:
            GcsClient(address=address).cluster_id  # noqa: B018 - asking is the check
        except Exception as exc:
            failure = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
    if failure:
        raise _unreachable(address, f"not a Ray GCS: {failure}")
