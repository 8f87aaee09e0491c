"""Inputs by path or URI: :class:`DataPath`, a small pathlib-like path into an S3 bucket (or any store of
:class:`ocean.storage.OutputStore`), and helpers that take a local ``pathlib.Path`` or a :class:`DataPath`.

Readers (datasets, benchmarks) keep their pathlib shape: :func:`as_path` gives a plain ``pathlib.Path`` for a
local root (no overhead) and a :class:`DataPath` for ``s3://bucket/prefix[?endpoint_override=...]``; the
helpers :func:`listdir`, :func:`walk`, :func:`open_binary`, :func:`open_text` and :func:`read_bytes` do the
right thing for both. The URI parser and filesystem builder are :class:`OutputStore`'s (one storage layer:
endpoint, region and credentials the standard way; credentials travel inside the pickled store, never in
``str`` / ``repr``).

On S3 a folder's listing is one LIST request (paginated by the SDK) and is cached per process
(:data:`LISTING_CACHE_FOLDERS` folders, least recently used first out), so ``is_file()`` / ``is_dir()`` on the
children of a folder cost no request each; reading a file is a HEAD and a GET (ray_stack.md §3.4). A listing
is a snapshot: an object deleted after it is still "there" for ``is_file()``; reading it raises
``FileNotFoundError``, which callers turn into a rejection.
"""

from __future__ import annotations

import io
import os
import posixpath
import time
from collections import OrderedDict
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import IO, Union

from ocean.storage import (
    CONNECT_TIMEOUT_S,
    InputLocationError,
    OutputStore,
    _first_line,
    describe_failure,
    is_uri,
    public_uri,
    s3_failure,
)

# folders whose listing a process keeps (a dataset reader looks at one sequence folder at a time; 256 keeps
# a split folder and its recent children without holding a whole dataset's names)
LISTING_CACHE_FOLDERS = 256

_FILESYSTEMS: dict[OutputStore, object] = {}
_LISTINGS: OrderedDict[tuple[OutputStore, str], dict[str, bool] | None] = OrderedDict()


class DataPath:
    """A file or folder in an :class:`OutputStore` (``store.kind`` ``"s3"``, or ``"local"`` for tests).

    ``path`` is the filesystem path inside the store's filesystem (``bucket/key`` for S3, no trailing
    slash). ``str()`` is ``s3://bucket/key`` (no query string, no credentials); pickling carries the store
    (with its credentials, as task arguments do), never a filesystem or a cached listing.
    """

    __slots__ = ("store", "path")

    def __init__(self, store: OutputStore, path: str) -> None:
        self.store = store
        self.path = path.rstrip("/") or path

    @classmethod
    def from_uri(cls, uri: str) -> DataPath:
        store = OutputStore.from_uri(uri)
        return cls(store, store.root)

    def __reduce__(self):
        return DataPath, (self.store, self.path)

    # ------------------------------------------------------------------------------------------ pure path

    def __str__(self) -> str:
        return f"s3://{self.path}" if self.store.kind == "s3" else self.path

    def __repr__(self) -> str:
        return f"DataPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataPath) and (self.store, self.path) == (other.store, other.path)

    def __hash__(self) -> int:
        return hash(self.path)

    def __lt__(self, other: DataPath) -> bool:
        return self.path < other.path

    def __truediv__(self, other: str | os.PathLike) -> DataPath:
        parts = [p for p in str(other).split("/") if p not in ("", ".")]
        return DataPath(self.store, "/".join([self.path, *parts])) if parts else self

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def parent(self) -> DataPath:
        head = posixpath.dirname(self.path)
        return DataPath(self.store, head) if head else self

    def relative_to(self, other: DataPath) -> PurePosixPath:
        if self.path == other.path:
            return PurePosixPath(".")
        if not self.path.startswith(other.path + "/"):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.path[len(other.path) + 1:])

    def as_posix(self) -> str:
        return str(self)

    # ------------------------------------------------------------------------------------------ queries

    @property
    def fs(self):
        """This process's filesystem for the store (built once per process and store)."""
        fs = _FILESYSTEMS.get(self.store)
        if fs is None:
            fs = _FILESYSTEMS[self.store] = self.store.filesystem()
        return fs

    def _kind(self) -> bool | None:
        """True for a folder, False for a file, None when nothing is there (from the parent's listing)."""
        parent = self.parent
        if parent is self:  # a bucket
            from pyarrow import fs as pafs

            return True if self.fs.get_file_info(self.path).type == pafs.FileType.Directory else None
        entries = _listing(parent)
        return None if entries is None else entries.get(self.name)

    def is_dir(self) -> bool:
        return self._kind() is True

    def is_file(self) -> bool:
        return self._kind() is False

    def exists(self) -> bool:
        return self._kind() is not None

    def iterdir(self) -> Iterator[DataPath]:
        """The folder's entries in name order (one LIST request, then cached); FileNotFoundError if none."""
        entries = _listing(self)
        if entries is None:
            raise FileNotFoundError(f"no such folder: {self}")
        return (DataPath(self.store, f"{self.path}/{n}") for n in sorted(entries))

    def glob(self, pattern: str) -> Iterator[DataPath]:
        """Entries whose name matches ``pattern`` (one level, ``fnmatch`` rules; no ``/`` or ``**``)."""
        if "/" in pattern:
            raise ValueError(f"DataPath.glob takes a name pattern, not {pattern!r}")
        return (p for p in self.iterdir() if fnmatchcase(p.name, pattern))

    # ------------------------------------------------------------------------------------------ reading

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def open(self, mode: str = "rb", encoding: str | None = None, errors: str | None = None,
             newline: str | None = None) -> IO:
        """A streaming reader (``"rb"`` or ``"r"``); the object is read as it is consumed."""
        if mode not in ("r", "rb"):
            raise ValueError(f"DataPath is read-only (mode {mode!r})")
        stream = self.fs.open_input_stream(self.path)
        if mode == "rb":
            return stream
        return io.TextIOWrapper(stream, encoding=encoding or "utf-8", errors=errors, newline=newline)


AnyPath = Union[Path, DataPath]  # noqa: UP007 -- a runtime alias, also for Python's isinstance users


def _listing(folder: DataPath) -> dict[str, bool] | None:
    """``{name: is_folder}`` of ``folder`` (one LIST request, cached), or None when no such folder."""
    key = (folder.store, folder.path)
    if key in _LISTINGS:
        _LISTINGS.move_to_end(key)
        return _LISTINGS[key]
    from pyarrow import fs as pafs

    try:
        infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=False, allow_not_found=False))
        entries: dict[str, bool] | None = {i.base_name: i.type == pafs.FileType.Directory for i in infos}
    except FileNotFoundError:
        entries = None
    _LISTINGS[key] = entries
    while len(_LISTINGS) > LISTING_CACHE_FOLDERS:
        _LISTINGS.popitem(last=False)
    return entries


def clear_listing_cache() -> None:
    """Forget every cached folder listing of this process."""
    _LISTINGS.clear()


# -------------------------------------------------------------------------------------------------------------
# Helpers over a local Path or a DataPath


def as_path(root: str | os.PathLike | DataPath) -> AnyPath:
    """A :class:`DataPath` for an ``s3://`` URI (or a DataPath as it is), else a plain ``pathlib.Path``."""
    if isinstance(root, DataPath):
        return root
    text = os.fspath(root) if isinstance(root, os.PathLike) else str(root)
    if is_uri(text):
        store = OutputStore.from_uri(text)
        if store.kind == "local":
            return Path(store.root)
        return DataPath(store, store.root)
    return Path(text)


def listdir(folder: AnyPath) -> list[str]:
    """Entry names of a folder (``os.listdir`` locally, one LIST request on S3)."""
    if isinstance(folder, DataPath):
        return [p.name for p in folder.iterdir()]
    return os.listdir(folder)


def walk(top: AnyPath) -> Iterator[tuple[AnyPath, list[str], list[str]]]:
    """``os.walk`` top-down: ``(folder, dirnames, filenames)``; sorting ``dirnames`` in place orders the walk.
    On S3 each folder is one LIST request."""
    if not isinstance(top, DataPath):
        for dirpath, dirnames, filenames in os.walk(top):
            yield Path(dirpath), dirnames, filenames
        return
    entries = _listing(top)
    if entries is None:
        return
    dirnames = sorted(n for n, d in entries.items() if d)
    filenames = sorted(n for n, d in entries.items() if not d)
    yield top, dirnames, filenames
    for name in dirnames:
        yield from walk(top / name)


def read_bytes(path: AnyPath | str) -> bytes:
    """A whole file: a local path, an ``s3://`` URI string or a :class:`DataPath`."""
    if isinstance(path, str) and is_uri(path):
        path = as_path(path)
    if isinstance(path, DataPath):
        return path.read_bytes()
    with open(path, "rb") as f:
        return f.read()


def open_binary(path: AnyPath) -> IO[bytes]:
    """A seekable binary file (on S3 the object is read whole first: for small files such as XML or images)."""
    if isinstance(path, DataPath):
        return io.BytesIO(path.read_bytes())
    return open(path, "rb")


def open_text(path: AnyPath, errors: str = "replace", newline: str | None = None) -> IO[str]:
    """A streaming UTF-8 text reader (large CSV / JSON files are not held whole as bytes on S3)."""
    if isinstance(path, DataPath):
        return path.open("r", encoding="utf-8", errors=errors, newline=newline)
    return open(path, encoding="utf-8", errors=errors, newline=newline)


def check_readable_folder(root: str, what: str) -> AnyPath:
    """The root of an input as :func:`as_path` gives it, checked before any work; ``what`` starts the
    messages (``"benchmark otb: root"``, ``"got10k: dataset root"``).

    Raises :class:`~ocean.storage.InputLocationError` (a StorageError) when the endpoint cannot be reached
    (within ``CONNECT_TIMEOUT_S`` even for one that never answers: one attempt, that timeout for the request
    too; ray_stack.md §3.4), the bucket or the prefix does not exist or the location is not a folder; the
    message names the location (:func:`ocean.storage.public_uri`), never credentials. ValueError for an
    unsupported URI.
    """
    path = as_path(root)
    if not isinstance(path, DataPath):
        if not path.is_dir():
            raise InputLocationError(f"{what} {root} is not a folder")
        return path
    from pyarrow import fs as pafs

    store = path.store
    where = f"{public_uri(str(root))} (endpoint {store.endpoint or 'AWS'})"
    t0 = time.monotonic()
    try:
        fs = store.filesystem(retries=1, request_timeout=CONNECT_TIMEOUT_S)
        bucket = fs.get_file_info(store.bucket)
        info = fs.get_file_info(store.root) if bucket.type != pafs.FileType.NotFound else bucket
    except OSError as exc:
        if s3_failure(exc) in ("access denied", "no such bucket"):
            raise InputLocationError(f"{what} {where}: {describe_failure(exc)}") from None
        raise InputLocationError(f"{what} {where}: S3 endpoint unreachable (gave up after "
                                 f"{time.monotonic() - t0:.1f} s: {_first_line(exc)})") from None
    if bucket.type == pafs.FileType.NotFound:
        raise InputLocationError(f"{what} {where}: S3 bucket {store.bucket!r} does not exist")
    if info.type != pafs.FileType.Directory:
        raise InputLocationError(f"{what} {where}: no such prefix (nothing under it, or a file, not a folder)")
    return path


class LocalCopy:
    """A local file for ``path``: the path itself when local, else the object fetched (streamed) into a fresh
    temporary file in ``tempfile.gettempdir()`` (the task's own disk), deleted by :meth:`close` / on ``with``
    exit. For readers that need a real file (OpenCV's video reader). ``FileNotFoundError`` when missing."""

    def __init__(self, path: AnyPath | str, chunk: int = 1 << 22) -> None:
        import tempfile

        path = as_path(path) if isinstance(path, str) else path
        self.temporary = isinstance(path, DataPath)
        if not self.temporary:
            self.name = os.fspath(path)
            return
        fd, self.name = tempfile.mkstemp(prefix="ocean-input-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as out, path.fs.open_input_stream(path.path) as src:
                while block := src.read(chunk):
                    out.write(block)
        except BaseException:
            os.unlink(self.name)
            raise

    def close(self) -> None:
        if self.temporary and os.path.exists(self.name):
            os.unlink(self.name)
        self.temporary = False

    def __enter__(self) -> str:
        return self.name

    def __exit__(self, *exc) -> None:
        self.close()


# files read ahead in threads when a reader walks many small files of a store (VID / DET XML): their HEAD + GET
# round trips overlap instead of adding up (BENCHMARKS.md, "Raw data from S3")
READ_AHEAD_THREADS = 8
READ_AHEAD_FILES = 32


def prefetched(paths: list[AnyPath]) -> Iterator[AnyPath | bytes | OSError]:
    """For each of ``paths``, in order: a local path as it is (the caller opens it, nothing changes locally),
    or the bytes of a :class:`DataPath` read ahead by :data:`READ_AHEAD_THREADS` threads at most
    :data:`READ_AHEAD_FILES` files ahead -- or the ``OSError`` reading it raised, for the caller to handle as
    it would the open's."""
    if not any(isinstance(p, DataPath) for p in paths[:1]):
        yield from paths
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def read(p: DataPath) -> bytes | OSError:
        try:
            return p.read_bytes()
        except OSError as exc:
            return exc

    with ThreadPoolExecutor(READ_AHEAD_THREADS, thread_name_prefix="ocean-read-ahead") as pool:
        todo, window = iter(paths), deque()
        for p in todo:
            window.append(pool.submit(read, p))
            if len(window) >= READ_AHEAD_FILES:
                break
        while window:
            data = window.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                window.append(pool.submit(read, nxt))
            yield data
