"""Files by path or URI -- a local path, ``file://`` or ``s3://bucket/prefix`` on any S3 endpoint -- and
:class:`OutputStore`, the output root a job writes to from any Ray worker.

One parser (:meth:`OutputStore.from_uri`), one filesystem builder (:meth:`OutputStore.filesystem`, where the
S3 endpoint and region rules are) and one atomic write serve both the module functions (:func:`read_bytes`,
:func:`write_bytes`, :func:`exists`, :func:`resolve`, ...) and :class:`OutputStore`. Writes are atomic: a
reader never sees half a file. Credentials never appear in ``repr``, logs or files (:func:`scrub`,
:func:`public_uri`). Importing this module loads neither pyarrow nor torch (data tasks stay light).
"""

from __future__ import annotations

import io
import os
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported only where a tensor is (de)serialised
    import torch

# seconds; a missing or unreachable endpoint must fail fast, not after the SDK's default retries
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 60.0


class StorageError(RuntimeError):
    """The output location cannot be used (missing bucket, unreachable endpoint, no write access)."""


class InputLocationError(StorageError):
    """An input root (raw dataset, benchmark) cannot be read: unreachable endpoint, missing bucket / prefix,
    not a folder (:func:`ocean.datapath.check_readable_folder`). Commands report it as a usage error."""


# What an S3 failure means, from the SDK's error name in pyarrow's OSError text ("AWS Error ACCESS_DENIED during
# HeadBucket operation: ...", "AWS Error NETWORK_CONNECTION ... curlCode: 7"); ray_stack.md §3.5
S3_ACCESS_DENIED = ("ACCESS_DENIED", "SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY_ID", "EXPIRED_TOKEN",
                    "INVALID_CLIENT_TOKEN_ID", "HTTP status 401", "HTTP status 403")
S3_UNREACHABLE = ("NETWORK_CONNECTION", "curlCode", "Could not connect", "Couldn't connect", "Timeout was reached",
                  "Could not resolve", "Couldn't resolve")
S3_NO_BUCKET = ("NO_SUCH_BUCKET",)


def s3_failure(exc: BaseException) -> str:
    """What a storage error means: ``"access denied"`` (the endpoint answered and refused the credentials),
    ``"endpoint unreachable"`` (no answer: connection refused, timeout, unknown host), ``"no such bucket"``,
    else ``"error"`` (ray_stack.md §3.5)."""
    text = str(exc)
    if any(k in text for k in S3_ACCESS_DENIED):
        return "access denied"
    if any(k in text for k in S3_NO_BUCKET):
        return "no such bucket"
    if any(k in text for k in S3_UNREACHABLE):
        return "endpoint unreachable"
    return "error"


def describe_failure(exc: BaseException) -> str:
    """One line naming the cause of a storage error (:func:`s3_failure`) and the SDK's own first line; for
    access denied, where the credentials come from. Never the credentials themselves."""
    kind = s3_failure(exc)
    first = _first_line(exc)
    if kind == "access denied":
        return (f"S3 access denied: the endpoint refused these credentials (AWS_ACCESS_KEY_ID / "
                f"AWS_SECRET_ACCESS_KEY in this process's environment, or the bucket's policy): {first}")
    if kind == "endpoint unreachable":
        return f"S3 endpoint unreachable: {first}"
    if kind == "no such bucket":
        return f"S3 bucket does not exist: {first}"
    return first


def is_uri(path: str) -> bool:
    return "://" in str(path)


@dataclass(frozen=True)
class OutputStore:
    """A root folder on a local disk (``kind="local"``) or in an S3 bucket (``kind="s3"``).

    Built once on the driver and passed to tasks as an argument: for S3 it carries the endpoint, region and
    -- when the driver has them in its environment -- the credentials, so that worker processes on other
    nodes (whose environment may lack ``AWS_*``) reach the same bucket. Credentials travel only inside task
    arguments (Ray's object store), never in ``runtime_env`` (which Ray's agents log); :meth:`__repr__`
    redacts them.

    Attributes:
        kind: ``"local"`` or ``"s3"``.
        root: absolute local path, or ``bucket/prefix`` (no scheme, no trailing slash) for S3.
        uri: the location as the user gave it minus any query string (for messages and the manifest).
        endpoint: ``host:port`` of the S3 endpoint, or None for AWS.
        scheme: ``http`` or ``https``.
        region: S3 region.
    """

    kind: str
    root: str
    uri: str
    endpoint: str | None = None
    scheme: str = "https"
    region: str = "us-east-1"
    _access_key: str | None = field(default=None, repr=False)
    _secret_key: str | None = field(default=None, repr=False)
    _session_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never show credentials
        creds = "explicit" if self._access_key else "default chain"
        return (f"OutputStore(kind={self.kind!r}, uri={self.uri!r}, endpoint={self.endpoint!r}, "
                f"region={self.region!r}, credentials={creds})")

    __str__ = __repr__

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_uri(cls, uri: str, env: Mapping[str, str] | None = None) -> OutputStore:
        """An :class:`OutputStore` for a local path, ``file://`` URI or ``s3://bucket/prefix[?endpoint_override=
        host:port&scheme=http&region=r]`` with endpoint / keys from ``env`` (default ``os.environ``).

        The URI's ``scheme`` defaults to ``https``; an endpoint from the environment keeps its own scheme
        (``http`` for a bare ``host:port``). Raises ValueError for any other URI scheme or a missing bucket.
        """
        env = dict(os.environ if env is None else env)
        uri = str(uri)
        if not is_uri(uri):
            path = str(Path(uri).expanduser().resolve())
            return cls("local", path, path)
        parsed = urllib.parse.urlparse(uri)
        if parsed.scheme == "file":
            path = str(Path(urllib.parse.unquote(parsed.path)).resolve())
            return cls("local", path, path)
        if parsed.scheme != "s3":
            raise ValueError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r} "
                             "(use a path, file:// or s3://bucket/prefix)")
        if not parsed.netloc:
            raise ValueError(f"no bucket in {uri!r}")
        query = urllib.parse.parse_qs(parsed.query)
        endpoint = query.get("endpoint_override", [None])[0]
        scheme = query.get("scheme", [None])[0]
        if endpoint is None:
            url = _env_endpoint(env)
            if url:
                endpoint, env_scheme = _split_endpoint(url)
                scheme = scheme or env_scheme
        region = query.get("region", [None])[0] or _env_region(env)
        root = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
        clean = urllib.parse.urlunparse(parsed._replace(query="")).rstrip("/")
        return cls("s3", root, clean, endpoint, scheme or "https", region, *_env_keys(env))

    @property
    def bucket(self) -> str | None:
        return self.root.split("/", 1)[0] if self.kind == "s3" else None

    def filesystem(self, retries: int = 3, request_timeout: float = REQUEST_TIMEOUT_S):
        """A ``pyarrow.fs`` filesystem for this store (built per process; S3 endpoint passed explicitly).

        ``retries`` (attempts per request) and ``request_timeout`` (seconds) are for S3; a fail-fast check
        passes one attempt and :data:`CONNECT_TIMEOUT_S` (:func:`ocean.datapath.check_readable_folder`).

        The S3 endpoint comes from the URI's ``?endpoint_override=HOST:PORT&scheme=http&region=R`` or from
        ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (:meth:`from_uri`) and is always passed explicitly to
        ``pyarrow.fs.S3FileSystem``, whose constructor ignores those variables (ray_stack.md §3,
        apache/arrow#49643); the region defaults to ``us-east-1`` so the AWS SDK does not probe the EC2
        metadata service (ray_stack.md §8).
        """
        from pyarrow import fs as pafs

        if self.kind == "local":
            return pafs.LocalFileSystem()
        kwargs: dict = {"region": self.region, "connect_timeout": CONNECT_TIMEOUT_S,
                        "request_timeout": request_timeout,
                        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=retries)}
        if self.endpoint:
            kwargs.update(endpoint_override=self.endpoint, scheme=self.scheme, force_virtual_addressing=False)
        if self._access_key and self._secret_key:
            kwargs.update(access_key=self._access_key, secret_key=self._secret_key)
            if self._session_token:
                kwargs["session_token"] = self._session_token
        return pafs.S3FileSystem(**kwargs)

    # ---------------------------------------------------------------- paths and I/O

    def path(self, rel: str) -> str:
        """The filesystem path of ``rel`` (a ``/``-separated path relative to the root)."""
        return f"{self.root}/{rel.strip('/')}"

    def exists(self, rel: str, fs=None) -> bool:
        """Whether ``rel`` is a file (a folder does not count)."""
        from pyarrow import fs as pafs

        fs = fs or self.filesystem()
        return fs.get_file_info(self.path(rel)).type == pafs.FileType.File

    def read(self, rel: str, fs=None) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        try:
            return _read(fs or self.filesystem(), self.path(rel))
        except FileNotFoundError:
            return None

    def write(self, rel: str, data: bytes | memoryview, fs=None) -> None:
        """Write ``data`` (any bytes-like object, e.g. a ``pyarrow.Buffer``) atomically (local: temporary name + ``os.replace``; S3: one complete upload)."""
        _write(self, self.path(rel), data, fs)

    def delete(self, rel: str, fs=None) -> None:
        fs = fs or self.filesystem()
        try:
            fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def check_writable(self) -> None:
        """Fail fast, before any work, when the location cannot be written.

        S3: the bucket must exist and the credentials must allow a write (a small probe object is written
        under the prefix and deleted). Raises :class:`StorageError` with a message that names the location
        but never the credentials.
        """
        from pyarrow import fs as pafs

        if self.kind == "local":
            try:
                Path(self.root).mkdir(parents=True, exist_ok=True)
                probe = f".write-probe-{uuid.uuid4().hex[:8]}"
                self.write(probe, b"")
                self.delete(probe)
            except OSError as exc:
                raise StorageError(f"cannot write to {self.uri}: {exc.strerror or exc}") from None
            return
        where = f"{self.uri} (endpoint {self.endpoint or 'AWS'})"
        try:
            fs = self.filesystem()
            info = fs.get_file_info(self.bucket)
        except OSError as exc:
            raise StorageError(f"cannot use {where}: {describe_failure(exc)}") from None
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"S3 bucket {self.bucket!r} does not exist at {where}; create it first") from None
        probe = f".write-probe-{uuid.uuid4().hex[:8]}"
        try:
            self.write(probe, b"", fs)
            self.delete(probe, fs)
        except OSError as exc:
            raise StorageError(f"cannot write to {where}: {describe_failure(exc)}") from None


# -------------------------------------------------------------------- one file by path or URI


def resolve(uri: str):
    """``(pyarrow filesystem, path inside it)`` for a local path, ``file://`` or ``s3://`` URI."""
    store = OutputStore.from_uri(uri)
    return store.filesystem(), store.root


def s3_filesystem(endpoint: str | None = None, region: str | None = None):
    """A ``pyarrow.fs.S3FileSystem`` for ``endpoint`` (a URL or ``host:port``; default from the environment,
    None = AWS) and ``region``, with the environment's credentials."""
    env = os.environ
    url = endpoint or _env_endpoint(env)
    host, scheme = _split_endpoint(url) if url else (None, "https")
    return OutputStore("s3", "", "s3://", host, scheme, region or _env_region(env), *_env_keys(env)).filesystem()


def join(base: str, *parts: str) -> str:
    """Join path parts onto a path or URI (keeps a URI's query string at the end)."""
    if is_uri(base):
        parsed = urllib.parse.urlparse(base)
        path = "/".join([parsed.path.rstrip("/"), *[p.strip("/") for p in parts]])
        return urllib.parse.urlunparse(parsed._replace(path=path))
    return str(Path(base, *parts))


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    try:
        return _read(fs, path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {uri}") from None


def read_bytes_as(uri: str, error: type[Exception], label: str) -> bytes:
    """:func:`read_bytes`, its failures raised as ``error("LABEL: no such file or object")`` or
    ``error("LABEL: cannot read it (the cause)")`` -- one line for a command to print."""
    try:
        return read_bytes(uri)
    except FileNotFoundError:
        raise error(f"{label}: no such file or object") from None
    except OSError as exc:
        raise error(f"{label}: cannot read it ({describe_failure(exc)})") from None


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically: a temporary name then rename on local disks; S3 objects appear only when complete."""
    store = OutputStore.from_uri(uri)
    _write(store, store.root, data)


def exists(uri: str) -> bool:
    """Whether a file or folder exists at ``uri``."""
    from pyarrow import fs as pafs

    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def load_torch(uri: str, map_location: str | torch.device = "cpu"):
    """``torch.load(..., weights_only=True)`` from a path or URI (never downloads over http)."""
    import torch

    return torch.load(io.BytesIO(read_bytes(uri)), map_location=map_location, weights_only=True)


def save_torch(obj, uri: str) -> None:
    """``torch.save`` to a path or URI (written whole, so a reader never sees half a file)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(uri, buf.getvalue())


# -------------------------------------------------------------------- shared pieces


def _read(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def _write(store: OutputStore, path: str, data: bytes | memoryview, fs=None) -> None:
    """The one atomic write: local, a unique temporary name then ``os.replace``; S3, one upload (an object
    appears only when its upload completes, ray_stack.md §2, "app-level shard writer")."""
    if store.kind == "local":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    fs = fs or store.filesystem()
    with fs.open_output_stream(path) as f:
        f.write(data)


def _env_endpoint(env: Mapping[str, str]) -> str | None:
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")


def _split_endpoint(url: str) -> tuple[str, str]:
    """``(host:port, scheme)`` of an endpoint URL; a bare ``host:port`` is http."""
    parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
    return parsed.netloc, parsed.scheme or "http"


def _env_region(env: Mapping[str, str]) -> str:
    return env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1"


def _env_keys(env: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    return env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_SESSION_TOKEN")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------------------
# Credentials never leave in logs, params or tags

REDACTED = "<redacted>"
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|credential|access[_-]?key|session[_-]?key|api[_-]?key)",
                         re.IGNORECASE)
_SECRET_QUERY = re.compile(r"(signature|credential|security-token|secret|password|token|access_key)", re.IGNORECASE)


def _secret_uri(text: str) -> bool:
    if "://" not in text:
        return False
    try:
        parsed = urllib.parse.urlparse(text)
    except ValueError:
        return False
    if parsed.password:
        return True
    return any(_SECRET_QUERY.search(k) for k in urllib.parse.parse_qs(parsed.query))


def scrub(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with credentials replaced by ``<redacted>``: keys that name a secret, password,
    token or access key, and URIs carrying a password or a signed query (``user:pw@host``,
    ``?X-Amz-Signature=``)."""
    out = {}
    for k, v in values.items():
        if _SECRET_KEY.search(str(k)) or (isinstance(v, str) and _secret_uri(v)):
            out[k] = REDACTED
        else:
            out[k] = v
    return out


def public_uri(uri: str) -> str:
    """``uri`` without its query string and user info (for logs, params and tags)."""
    if "://" not in uri:
        return uri
    parsed = urllib.parse.urlparse(uri)
    if not parsed.netloc:  # sqlite:////abs/x.db, file:///x: nothing secret; urlunparse would drop a slash
        return uri.split("?", 1)[0]
    netloc = parsed.hostname or ""
    if parsed.port:
        netloc += f":{parsed.port}"
    return urllib.parse.urlunparse(parsed._replace(netloc=netloc, query=""))
