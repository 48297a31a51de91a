"""One pool of keep-alive connections per engine socket for the docker SDK's client.

docker-py's Unix-socket transport keys its connection pools by each request's whole
URL (path and query included), and keeps the 25 most recent. Every container's own URLs
— ``/containers/<name>/start``, ``.../json``, ``.../logs?tail=...`` — are new keys, so
nearly every call the Docker adapter makes for a job opened a new connection to the
engine and the engine accepted it (≈ 0.3 ms a call on the benchmark machine, two per
submission, one per status request of a running job), while older pools were closed.
All of these URLs go to the same socket: one pool, sized for the server's worker
threads plus the long-lived streams (the event view), keeps the connections open.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from docker.transport import UnixHTTPAdapter

# Long-lived requests that hold a connection beside the worker threads' calls: the event
# view's stream, the adapter's parallel listing (8), and room to spare. Past the size the
# pool still serves (it opens and drops extra connections), it does not block.
STREAM_HEADROOM = 16
POOL_KEY = "http+docker://localhost"


class SocketPoolAdapter(UnixHTTPAdapter):  # type: ignore[misc]  # docker ships no type hints
    """docker-py's Unix-socket adapter with one connection pool for every URL but the
    event stream's."""

    def get_connection(self, url: Any, proxies: Any = None) -> Any:
        if "/events" in urlsplit(str(url)).path:
            # The event view's stream opens a connection of its own, as before: an engine
            # shutting down closes its listener first and may still answer over kept-alive
            # connections for a while, and the view must see it gone, not subscribe again.
            return super().get_connection(url, proxies)
        return super().get_connection(POOL_KEY, proxies)


def share_engine_connections(api: Any) -> bool:
    """Make the docker SDK ``APIClient`` ``api`` keep one pool of connections for its Unix
    socket. Returns whether it did: an engine reached over TCP, TLS or SSH keeps its own
    transport (``requests`` already pools those by host). Idempotent."""
    old: Any = getattr(api, "_custom_adapter", None)
    if type(old) is not UnixHTTPAdapter:
        return False
    new = SocketPoolAdapter(
        f"http+unix://{old.socket_path}", old.timeout, max_pool_size=old.max_pool_size + STREAM_HEADROOM
    )
    api.mount("http+docker://", new)
    api._custom_adapter = new
    old.close()
    return True
