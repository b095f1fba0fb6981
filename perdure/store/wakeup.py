"""Wake-ups between processes sharing one SQLite file, without polling delays.

Each worker binds a Unix datagram socket in a directory named after the database; a
process that made work claimable sends one byte to each. Losing a datagram costs at most
one poll interval: the poll stays as the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import tempfile
from pathlib import Path

_WORK, _CANCEL = b"!", b"c"


class Wakeup:
    def __init__(self, database: Path) -> None:
        digest = hashlib.sha1(str(database.resolve()).encode()).hexdigest()[:16]
        # Socket paths are limited to ~100 bytes, so they live under the temp directory.
        self.directory = Path(tempfile.gettempdir()) / f"perdure-{digest}"
        self._sock: socket.socket | None = None
        self._path: Path | None = None
        self._sender: socket.socket | None = None
        self.cancel_asked = False  # a wake-up said a run's cancellation was asked for

    def listen(self, name: str) -> None:
        if self._sock is not None:
            self.close_listener()
        path = self.directory / f"{name}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for last in (False, True):
            self.directory.mkdir(mode=0o700, exist_ok=True)
            try:
                sock.bind(str(path))
                break
            except FileNotFoundError:  # the last listener removed the directory meanwhile
                if last:
                    sock.close()
                    raise
        sock.setblocking(False)
        self._sock, self._path = sock, path

    async def wait(self, timeout: float) -> bool:
        """Wait for a wake-up, at most `timeout` seconds; True if one came. Drains the
        datagrams that piled up, so one claim answers many triggers."""
        sock = self._sock
        if sock is None:
            await asyncio.sleep(timeout)
            return False
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(max(timeout, 0)):
                got = await loop.sock_recv(sock, 64)
        except TimeoutError:
            return False
        with contextlib.suppress(BlockingIOError):
            while True:
                self.cancel_asked = self.cancel_asked or got == _CANCEL
                got = sock.recv(64)
        return True

    def take_cancel_asked(self) -> bool:
        """Whether a wake-up since the last call said a run's cancellation was asked for."""
        asked, self.cancel_asked = self.cancel_asked, False
        return asked

    def notify(self, cancel: bool = False) -> None:
        """Wake every listening process (best effort, never blocks); `cancel` says a run's
        cancellation was asked for, so that its worker looks for it."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        for name in names:
            path = self.directory / name
            if path == self._path:
                continue
            try:
                self._sender.sendto(_CANCEL if cancel else _WORK, str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    path.unlink()  # the listener died without cleaning up
            except (BlockingIOError, OSError):
                pass  # its buffer is full: it has wake-ups pending anyway

    def notify_self(self) -> None:
        """Wake this process's own listener (after a local change)."""
        if self._sock is not None and self._path is not None:
            with contextlib.suppress(OSError):
                self._sock.sendto(_WORK, str(self._path))

    def close_listener(self) -> None:
        if self._sock is not None:
            self._sock.close()
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()
            with contextlib.suppress(OSError):
                self.directory.rmdir()  # the last listener of this database leaves nothing
        self._sock, self._path = None, None

    def close(self) -> None:
        self.close_listener()
        if self._sender is not None:
            self._sender.close()
        self._sender = None
