"""A FastAPI app served by uvicorn in a background thread on 127.0.0.1: how the loopback test instruments run."""

import socket
import threading
import time
from dataclasses import dataclass

import uvicorn


@dataclass
class Running:
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_in_thread(app, *, name: str, port: int = 0, **options) -> Running:
    """Serve `app` on 127.0.0.1:`port` (0: a free one) and return once it accepts connections.

    `options` go to `uvicorn.Config` (e.g. `backlog`, `timeout_keep_alive`).
    """
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so; without it, Nagle plus
    # the client's delayed ACK add ~40 ms to every answer (uvicorn writes headers and body apart).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, loop="asyncio", http="h11", **options)
    server = _ThreadServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"{name}-{port}")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"{name} on port {port} did not start")
        time.sleep(0.005)
    return Running(port, server, thread)


class _ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # signals can be installed only from the main thread
        pass
