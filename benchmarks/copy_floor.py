"""What every transfer pays for its bytes, measured in the run that compares a client against it.

    python benchmarks/copy_floor.py serve                    # the far end: prints its port, serves until killed
    python benchmarks/copy_floor.py send FILE PORT           # upload floor: file -> reused buffer -> socket
    python benchmarks/copy_floor.py receive OUT PORT BYTES   # download floor: socket -> reused buffer -> file
    python benchmarks/copy_floor.py hash md5 sha256 --mib 1024

- The raw copy floor of an upload: read the file (from the page cache) into
  one reused buffer and send it over a loopback socket to another process
  that discards it. Of a download: receive from a loopback socket (the other
  process sends one reused buffer again and again) into one reused buffer and
  write it to a file through the page cache.
- The hash cost: hashlib on an in-memory buffer, per hash a method computes.

Each measuring command prints one JSON line: the CPU seconds (user + system,
from ``getrusage``) and the wall seconds of its loop alone, and the bytes.
Run them on the client's CPU (``publish_bench.run_on_client_cpu``) and the
server on the server's, as the benchmarks do with ``--pin``.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Sequence

MIB = 1024 * 1024
GIB = 1024 * MIB
#: Bytes per read, send, receive and write: large enough that the Python loop around them costs nothing.
BLOCK = 1 * MIB


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(work: Callable[[], int]) -> Dict[str, float]:
    cpu, wall = _cpu_s(), time.perf_counter()
    moved = work()
    return {"cpu_s": _cpu_s() - cpu, "wall_s": time.perf_counter() - wall, "bytes": moved}


# -- the far end ------------------------------------------------------------------------


def serve() -> None:
    """Accept connections one at a time: ``SEND n`` sends n bytes, anything else is read and dropped."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    block = bytearray(os.urandom(BLOCK))
    while True:
        conn, _ = listener.accept()
        with conn:
            command = conn.recv(64).split(b"\n", 1)[0].split()
            if command[:1] == [b"SEND"]:
                left = int(command[1])
                view = memoryview(block)
                while left > 0:
                    left -= conn.send(view[: min(left, BLOCK)])
            else:
                sink = bytearray(BLOCK)
                while conn.recv_into(sink):
                    pass


def start_server() -> Any:
    """Start ``serve`` as a child of this process (so it runs on this process's CPUs); returns (process, port)."""
    process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve"], stdout=subprocess.PIPE)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, port


# -- the measured copies ----------------------------------------------------------------


def send(path: str, port: int) -> Dict[str, float]:
    """Upload floor: the file through one reused buffer to the socket."""
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)

    def work() -> int:
        moved = 0
        with socket.create_connection(("127.0.0.1", port)) as conn, open(path, "rb", buffering=0) as handle:
            conn.sendall(b"DISCARD\n")
            while True:
                count = handle.readinto(buffer)
                if not count:
                    break
                conn.sendall(view[:count])
                moved += count
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)  # the far end has read everything when it closes
        return moved

    return _timed(work)


def receive(out: str, port: int, size: int) -> Dict[str, float]:
    """Download floor: ``size`` bytes from the socket through one reused buffer into a file."""
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)

    def work() -> int:
        moved = 0
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with socket.create_connection(("127.0.0.1", port)) as conn:
                conn.sendall(f"SEND {size}\n".encode())
                while moved < size:
                    count = conn.recv_into(buffer)
                    if not count:
                        break
                    written = 0
                    while written < count:
                        written += os.write(fd, view[written:count])
                    moved += count
        finally:
            os.close(fd)
        return moved

    try:
        return _timed(work)
    finally:
        os.unlink(out)


def hash_cost(names: Sequence[str], mib: int) -> Dict[str, Dict[str, float]]:
    """CPU and wall seconds of each hash over ``mib`` MiB in memory (a 64 MiB buffer, hashed repeatedly)."""
    chunk = min(mib, 64) * MIB
    buffer = os.urandom(chunk)
    results = {}
    for name in names:

        def work(name: str = name) -> int:
            digest = hashlib.new(name)
            for _ in range(mib * MIB // chunk):
                digest.update(buffer)
            return mib * MIB // chunk * chunk

        results[name] = _timed(work)
    return results


def per_gib(result: Dict[str, float], key: str = "cpu_s") -> float:
    """Seconds per GiB of a measured copy or hash."""
    return result[key] * GIB / max(1, result["bytes"])


def main(argv: List[str]) -> int:
    """Run one command (see the module docstring); prints its result as one JSON line."""
    command, args = argv[0], argv[1:]
    if command == "serve":
        serve()
        return 0
    if command == "send":
        result: Any = send(args[0], int(args[1]))
    elif command == "receive":
        result = receive(args[0], int(args[1]), int(args[2]))
    elif command == "hash":
        mib = int(args[args.index("--mib") + 1]) if "--mib" in args else 1024
        result = hash_cost([a for a in args if not a.startswith("--") and not a.isdigit()], mib)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
