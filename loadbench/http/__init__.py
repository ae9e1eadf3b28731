"""Sending one request and reading its stream: the lean HTTP/1.1 transport, the SSE decoder
and ``LoadClient``, which turns a response into a ``RequestRecord`` (the hot path).
"""

from loadbench.http.client import LoadClient
from loadbench.http.sse import SSEDecoder

__all__ = ["LoadClient", "SSEDecoder"]
