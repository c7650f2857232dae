"""Is a server listening? One short TCP check before any work, so a dead endpoint costs seconds, not
retries: LM servers (model.api_base) and MLflow tracking servers (tracking.tracking_uri)."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from runner.errors import RunnerError


def check_endpoint(url: str, what: str, hint: str, timeout: float = 2.0) -> None:
    """RunnerError naming `what` at `url` unless something accepts a connection there (http/https only)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise RunnerError(f"cannot reach {what} {url} ({exc})", hint) from exc
