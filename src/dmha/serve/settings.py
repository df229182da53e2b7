"""The service's limits and batching knobs, checked once at start-up."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ServeSettings:
    """Limits of `dmha serve`; every request that breaks one gets a 4xx/5xx with a one-line message."""

    max_upload_mb: float = 50.0       # audio part of a request, 413 above it
    max_duration_s: float = 60.0      # /v1/predict, 422 above it
    max_long_duration_s: float = 3600.0  # /v1/predict-long, 422 above it
    timeout_s: float = 30.0           # /v1/predict: decode + queue + prediction, 504 after it
    long_timeout_s: float = 900.0     # /v1/predict-long, 504 after it
    upload_timeout_s: float = 60.0    # receiving the request body (slow clients), 408 after it
    head_timeout_s: float = 10.0      # receiving the request line + headers; the connection is closed after it
    queue_size: int = 64              # items waiting for the worker, 503 when full
    batch_window_ms: float = 20.0     # how long the worker waits to fill a batch
    max_batch: int = 8                # items per predict_waves call
    max_transcript_chars: int = 20_000  # 422 above it
    max_connections: int = 256        # open connections; requests beyond them get 503
    max_decodes: int = 2              # uploads decoded at once (bounds peak memory); the rest wait, within timeout_s
    tmp_dir: str | None = None        # parent of the service's own temp folder (default: the system's)
    # Host header names accepted (400 otherwise), against DNS rebinding and cross-site posts to a local
    # service; None: every host (create_app alone), `dmha serve` derives them from its bound address.
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "tmp_dir":
                continue
            if f.name == "allowed_hosts":
                if value is not None and (isinstance(value, str) or not all(isinstance(h, str) and h.strip()
                                                                             for h in value)):
                    raise ValueError(f"serve setting allowed_hosts must be a list of host names, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"serve setting {f.name} must be a number, got {value!r}")
            positive = f.name not in ("batch_window_ms",)
            if value < 0 or (positive and value == 0):
                raise ValueError(f"serve setting {f.name} must be {'> 0' if positive else '>= 0'}, got {value}")
        for name in ("queue_size", "max_batch", "max_transcript_chars", "max_connections", "max_decodes"):
            if int(getattr(self, name)) != getattr(self, name):
                raise ValueError(f"serve setting {name} must be an integer, got {getattr(self, name)}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def public(self) -> dict:
        """What clients may know (the web page uses it to choose the endpoint); no server paths."""
        return {k: v for k, v in asdict(self).items() if k not in ("tmp_dir", "allowed_hosts")}


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def default_allowed_hosts(host: str) -> tuple[str, ...]:
    """The names a client may use for a service bound to `host`: loopback names for a loopback bind;
    for another address that address; for a wildcard bind (0.0.0.0, ::) this machine's name and
    addresses too. Anything else is refused unless named in --allowed-hosts."""
    import socket

    names = list(LOOPBACK_HOSTS)
    if host not in ("0.0.0.0", "::", ""):
        names.append(host if ":" not in host else f"[{host}]")
    else:
        name = socket.gethostname()
        names += [name, socket.getfqdn()]
        try:
            names += socket.gethostbyname_ex(name)[2]
        except OSError:
            pass
    return tuple(dict.fromkeys(names))
