"""Serving the ASGI app with uvicorn inside a running event loop, beside a worker if need
be (`perdure dev`): the caller owns the signals and says when to stop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.applications import Starlette

from perdure import exceptions

STARTUP_SECONDS = 30.0
GRACE_SECONDS = 5.0  # requests still running at shutdown get this long


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the command handles SIGTERM and SIGINT itself


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free one); ConfigurationError if it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
    except OSError as error:
        raise exceptions.ConfigurationError(
            f"cannot listen on {host}:{port}: {error.strerror or error}; pass another --port"
        ) from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def running(
    server: Starlette, sock: socket.socket, *, access_log: bool = True
) -> AsyncIterator[str]:
    """Serve `server` on `sock` for the duration of the block; its base URL. On leaving,
    the event streams end and requests still running get GRACE_SECONDS to finish."""
    config = uvicorn.Config(
        server,
        log_config=None,
        access_log=access_log,
        timeout_graceful_shutdown=int(GRACE_SECONDS),
        lifespan="on",
    )
    uv = _Server(config)
    task = asyncio.get_running_loop().create_task(uv.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(STARTUP_SECONDS):
            while not uv.started:
                if task.done():
                    task.result()  # raise what stopped it
                    raise exceptions.ConfigurationError("the server stopped while starting")
                await asyncio.sleep(0.01)
        yield url_of(sock)
    finally:
        server.state.streams.stopping = True
        uv.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, GRACE_SECONDS + 10)
        sock.close()
