"""What `tuner serve` is started with, and the rules that keep it safe: the API token, where it may listen,
request size bounds, safe download names.

With TUNER_API_TOKEN set, every mutating endpoint needs `Authorization: Bearer <token>`. Without one the service
listens on the loopback interface only (asking for another host is an error that says to set the token), and a
mutating request from a web page of another origin is refused, so a page open in the user's browser cannot queue
or cancel jobs behind their back.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass

from tuner.errors import TunerError

TOKEN_ENV = "TUNER_API_TOKEN"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_BODY_BYTES = 256 * 1024  # a job request is a few hundred bytes; a space file is given by path, not inline
MIN_TOKEN_CHARS = 16
DEFAULT_PORT = 8642
DEFAULT_LEASE_S = 30.0  # the service's workers: a unit of a killed service is taken over this long after


@dataclass(frozen=True)
class ServiceConfig:
    """`tuner serve`'s options. `gpus`: local GPU indices given a worker each (one GPU unit at a time per GPU);
    `cpu_workers`: workers for CPU kinds (exports, simulated-engine flag searches) beside them."""

    database_url: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    gpus: tuple[int, ...] = ()
    cpu_workers: int = 1
    lease_s: float = DEFAULT_LEASE_S
    heartbeat_s: float = 5.0
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise TunerError(f"{TOKEN_ENV} is {len(self.token)} characters; use at least {MIN_TOKEN_CHARS} "
                             f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')")
        if not self.token and not is_loopback(self.host):
            raise TunerError(f"--host {self.host}: without {TOKEN_ENV} the service listens on localhost only; set "
                             f"{TOKEN_ENV} to a secret to listen on other interfaces")
        if not 0 < self.port < 65536:
            raise TunerError(f"--port {self.port}: use a port between 1 and 65535")
        if self.cpu_workers < 0:
            raise TunerError(f"--cpu-workers {self.cpu_workers}: use 0 or more")
        if not self.lease_s > 0 or not 0 < self.heartbeat_s < self.lease_s:
            raise TunerError("--lease-s must be positive and longer than the heartbeat interval")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start_lines(self) -> list[str]:
        """What the service says when it starts: where it is, and how mutating calls are protected."""
        lines = [f"tuner service on {self.url}  (API docs: {self.url}docs, metrics: {self.url}metrics)"]
        if self.token:
            lines.append(f"mutating endpoints need 'Authorization: Bearer <{TOKEN_ENV}>'")
        else:
            lines.append(f"no {TOKEN_ENV} set: listening on localhost only; anyone on this machine can queue and "
                         f"cancel jobs (set {TOKEN_ENV} to require a token)")
        return lines


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_ok(config_token: str | None, authorization: str | None) -> bool:
    """Whether an `Authorization` header carries the configured token (constant-time compare)."""
    if not config_token:
        return True
    if not authorization or not authorization.startswith("Bearer "):
        return False
    return secrets.compare_digest(authorization[len("Bearer "):].strip().encode(), config_token.encode())


def same_origin(origin: str | None, host_header: str | None) -> bool:
    """Whether a request's Origin (absent for curl and scripts) is the service's own (its Host header)."""
    if origin is None:
        return True
    if not host_header:
        return False
    return origin.rstrip("/") in (f"http://{host_header}", f"https://{host_header}")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, suffix: str = "") -> str:
    """A download file name made of letters, digits, '.', '_' and '-' only (no path, no quotes, no dot-file),
    at most 100 characters before `suffix`."""
    cleaned = _UNSAFE.sub("_", name).strip("._") or "download"
    return cleaned[:100] + suffix
