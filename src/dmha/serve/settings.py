"""The service's limits and batching knobs, checked once at start-up."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


def _flag(default, help: str, **cli):
    """A setting `dmha serve` offers as --NAME (help, and optionally metavar, type and parse)."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class ServeSettings:
    """Limits of `dmha serve`; every request that breaks one gets a 4xx/5xx with a one-line message."""

    max_upload_mb: float = _flag(50.0, "largest upload (413 above)")
    max_duration_s: float = _flag(60.0, "longest clip for /v1/predict (422 above)")
    max_long_duration_s: float = _flag(3600.0, "longest recording for /v1/predict-long")
    timeout_s: float = _flag(30.0, "per-request limit of /v1/predict (504 after)")  # decode + queue + prediction
    long_timeout_s: float = _flag(900.0, "per-request limit of /v1/predict-long")
    upload_timeout_s: float = 60.0    # receiving the request body (slow clients), 408 after it
    head_timeout_s: float = _flag(10.0, "a connection must send a complete request header within this "
                                        "(408/closed after)")
    queue_size: int = _flag(64, "requests waiting for the model (503 when full)")
    batch_window_ms: float = _flag(20.0, "micro-batching window (0: no waiting)")
    max_batch: int = _flag(8, "requests per model call (1: no micro-batching)")
    max_transcript_chars: int = 20_000  # 422 above it
    max_connections: int = 256        # open connections; requests beyond them get 503
    max_decodes: int = _flag(2, "uploads decoded at once (bounds decoding memory)")  # the rest wait, within timeout_s
    tmp_dir: str | None = _flag(None, "where the service makes its temp folder for uploads (default: system temp)")
    # Host header names accepted (400 otherwise), against DNS rebinding and cross-site posts to a local
    # service; None: every host (create_app alone), `dmha serve` derives them from its bound address.
    allowed_hosts: tuple[str, ...] | None = _flag(
        None, "comma-separated Host header names accepted (400 otherwise; '*' = any); default: the bound "
              "address's names (loopback: 127.0.0.1, localhost, ::1)", metavar="NAMES", type=str,
        parse=lambda names: tuple(h.strip() for h in names.split(",") if h.strip()) or None)

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


def cli_flags() -> list[tuple[str, dict, object]]:
    """(--flag, argparse keywords, parse) for each setting `dmha serve` offers, in field order."""
    flags = []
    for f in fields(ServeSettings):
        if "help" not in f.metadata:
            continue
        kind = f.metadata.get("type", type(f.default) if f.default is not None else str)
        keywords = {"type": kind, "default": f.default, "help": f.metadata["help"]}
        if "metavar" in f.metadata:
            keywords["metavar"] = f.metadata["metavar"]
        flags.append((f"--{f.name.replace('_', '-')}", keywords, f.metadata.get("parse")))
    return flags


def from_cli(args) -> ServeSettings:
    """The settings parsed by `dmha serve` (cli_flags), the rest at their defaults."""
    values = {}
    for flag, _, parse in cli_flags():
        name = flag[2:].replace("-", "_")
        value = getattr(args, name)
        values[name] = parse(value) if parse is not None and value is not None else value
    return ServeSettings(**values)


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
