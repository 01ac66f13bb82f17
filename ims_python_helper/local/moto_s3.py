"""A real S3 server on loopback: moto's standalone server as a child process.

moto runs in its own process (not in-process mocking), so clients talk real
HTTP with real signatures, multipart uploads and ETags, exactly as they would
to Ceph RGW.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import requests

from ims_python_helper.local.errors import undone_on_error
from ims_python_helper.local.s3backend import DEFAULT_BUCKETS

#: Access key id the local S3 user gets (moto accepts any; a fixed one keeps env output stable).
ACCESS_KEY = "local-access-key"
#: How long moto may take to answer after launch before start() gives up.
START_TIMEOUT_SECONDS = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    Another process can take it before it is used; callers that launch a
    server on it should retry with a new port if the launch fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def persistent_secret(path: Path, nbytes: int = 32) -> str:
    """Return the secret stored in ``path``, creating a random one (mode 0600) the first time.

    Keeping secrets in the data directory lets a restarted stack hand out the
    same credentials, so clients holding them keep working.
    """
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(nbytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Someone else created it between our read and our create; theirs wins.
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class MotoS3:
    """moto's S3 server as a child process, with the default buckets created.

    Its log goes to ``data_dir/moto.log``. Objects live in the child's memory,
    so they are gone after stop(); the secret key is kept in ``data_dir``.
    """

    name = "moto"

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self._host = host
        self._requested_port = port
        self._port = 0
        self._secret_key = ""
        self._process: Optional[subprocess.Popen[bytes]] = None

    @property
    def endpoint(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        if not self._port:
            raise RuntimeError("moto S3 server is not running")
        return f"http://{self._host}:{self._port}"

    @property
    def access_key(self) -> str:
        """Access key id for clients."""
        return ACCESS_KEY

    @property
    def secret_key(self) -> str:
        """Secret key for clients (persisted in ``data_dir``)."""
        if not self._secret_key:
            self._secret_key = persistent_secret(self.data_dir / "moto-secret-key")
        return self._secret_key

    @property
    def log_path(self) -> Path:
        """Where the server's stdout and stderr go."""
        return self.data_dir / "moto.log"

    def start(self) -> None:
        """Launch moto, wait until it answers, and create the default buckets."""
        if self._process is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _ = self.secret_key
        # A picked port can be taken before moto binds it; then pick another.
        attempts = 1 if self._requested_port else 3
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_port(self._host)
            process = self._launch(port)
            try:
                self._wait_until_answering(process, port)
            except _ExitedEarly as error:
                if attempt == attempts:
                    raise RuntimeError(str(error)) from None
                continue
            except BaseException:
                self._terminate(process)
                raise
            self._process, self._port = process, port
            break
        with undone_on_error(self.stop):
            self._create_buckets()

    def stop(self) -> None:
        """Terminate the server (kill it if it lingers); safe to call twice."""
        process, self._process = self._process, None
        self._port = 0
        if process is not None:
            self._terminate(process)

    def __enter__(self) -> MotoS3:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _launch(self, port: int) -> subprocess.Popen[bytes]:
        # The child gets its own copy of the file descriptor; ours closes when Popen returns.
        with open(self.log_path, "ab") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self._host, "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C at the terminal reaches us, and we stop moto after IMS.
                start_new_session=True,
            )

    def _wait_until_answering(self, process: subprocess.Popen[bytes], port: int) -> None:
        url = f"http://{self._host}:{port}/"
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            status = process.poll()
            if status is not None:
                raise _ExitedEarly(
                    f"moto S3 server exited with status {status} during start-up; "
                    f"end of {self.log_path}:\n{_log_tail(self.log_path)}"
                )
            try:
                requests.get(url, timeout=1)
                return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto S3 server did not answer on port {port} within {START_TIMEOUT_SECONDS:.0f} s; "
                    f"see {self.log_path}"
                )
            time.sleep(0.05)

    def _create_buckets(self) -> None:
        # moto accepts unsigned requests; plain HTTP here keeps boto3 out of start-up time.
        with requests.Session() as session:
            for bucket in DEFAULT_BUCKETS:
                response = session.put(f"{self.endpoint}/{bucket}", timeout=10)
                if response.status_code not in (200, 409):
                    raise RuntimeError(f"creating bucket {bucket} on moto failed: HTTP {response.status_code}")

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class _ExitedEarly(RuntimeError):
    """moto exited before it answered (for example because its port was taken)."""
