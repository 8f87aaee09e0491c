"""Reading and writing files by path or URI: local paths, ``file://`` and ``s3://`` (any S3 endpoint).

The S3 endpoint comes from the standard environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) or from ``?endpoint_override=`` in the URI. pyarrow's
``S3FileSystem()`` constructor ignores ``AWS_ENDPOINT_URL`` (ray_stack.md §3, apache/arrow#49643), so the
filesystem is always built here with the endpoint passed explicitly.
"""

from __future__ import annotations

import io
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported only where a tensor is (de)serialised: data tasks stay light
    import torch


def is_uri(path: str) -> bool:
    return "://" in str(path)


def s3_filesystem(endpoint: str | None = None, region: str | None = None):
    """A ``pyarrow.fs.S3FileSystem`` for ``endpoint`` (default ``$AWS_ENDPOINT_URL``; None = AWS)."""
    from pyarrow import fs as pafs

    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs = {"region": region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
              or "us-east-1"}
    if endpoint:
        parsed = urllib.parse.urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "http",
                      force_virtual_addressing=False)
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str):
    """``(pyarrow filesystem, path inside it)`` for a local path, ``file://`` or ``s3://`` URI."""
    from pyarrow import fs as pafs

    uri = str(uri)
    if not is_uri(uri):
        return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), urllib.parse.unquote(parsed.path)
    if parsed.scheme == "s3":
        query = urllib.parse.parse_qs(parsed.query)
        endpoint = query.get("endpoint_override", [None])[0]
        if endpoint and "scheme" in query:
            endpoint = f"{query['scheme'][0]}://{endpoint}"
        region = query.get("region", [None])[0]
        return s3_filesystem(endpoint, region), f"{parsed.netloc}{parsed.path}".rstrip("/")
    raise ValueError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r} (use a path, file:// or s3://)")


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
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {uri}") from None


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically: a temporary name then rename on local disks; S3 objects appear only when complete."""
    fs, path = resolve(uri)
    if not is_uri(uri) or uri.startswith("file://"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def exists(uri: str) -> bool:
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
