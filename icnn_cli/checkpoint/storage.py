"""Where a checkpoint lives: a local directory, or a URL in object storage (``gs://``).

A path the user gives passes :func:`storage_path` once: a local one stays a
:class:`pathlib.Path` (and keeps the local code: ``renameat2``, fsync), a URL
becomes Orbax's own path type, :class:`etils.epath.Path` over fsspec (gcsfs for
``gs://``). Both share ``/``, ``.name``, ``.parent``, ``.exists()``,
``.is_dir()``, ``.is_file()``, ``.iterdir()`` and ``.read_bytes()``, which is all
the reading side uses; the few things that differ (a file's size, the path Orbax
is given, tensorstore's kvstore spec) are the functions here.

A scheme is accepted when both Orbax's path type and tensorstore reach it:
``gs://`` (gcsfs and tensorstore's ``gcs`` driver) and ``s3://`` (s3fs, which
icnn does not install, and tensorstore's ``s3`` driver). Any other scheme, and
``s3://`` without s3fs, is refused by its name before a library sees the URL
(tensorstore's ``s3`` driver logs a page of AWS config lookups on its own).

Example::

    path = storage_path("gs://bucket/ckpt")     # etils.epath.Path
    check_reachable(path)                       # one request; plain words if not
    kvstore_spec(path)  # {"driver": "gcs", "bucket": "bucket", "path": "ckpt/"}
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from icnn_cli.errors import (
    IcnnError,
    NotACheckpoint,
    StorageFailure,
    UnsupportedStorage,
    UsageError,
    first_line,
)

if TYPE_CHECKING:
    from etils import epath

StoragePath: TypeAlias = "Path | epath.Path"
"""Where a checkpoint lives: a local :class:`pathlib.Path`, or an :class:`etils.epath.Path`
for a URL (both share the methods the reading side uses; see the module's docstring)."""

URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<bucket>[^/]*)/?(?P<key>.*)$")
# scheme -> tensorstore kvstore driver, for the schemes etils.epath also reaches
KVSTORE_DRIVERS = {"gs": "gcs", "s3": "s3"}
# scheme -> the fsspec package etils.epath needs for it (gcsfs is a dependency of icnn)
FILESYSTEM_PACKAGES = {"gs": "gcsfs", "s3": "s3fs"}
# Requests tensorstore retries before giving up (its default keeps a closed port busy
# for minutes); gcsfs retries 6 times, about 33 s, and has no setting for it.
PROBE_RETRIES = {"max_retries": 2, "initial_delay": "100ms", "max_delay": "500ms"}
READ_RETRIES = {"max_retries": 6, "initial_delay": "1s", "max_delay": "32s"}  # as gcsfs
REMOTE_CACHE_BYTES = 8 << 20  # OCDBT manifests and b-tree nodes, shared by a command's reads
# Python loggers that print to stderr on their own (gcsfs logs each failed request with
# its traceback, google-auth warns when it finds no credentials): icnn says it in one line.
NOISY_LOGGERS = ("gcsfs", "google.auth", "google_auth_httplib2", "fsspec", "urllib3")
# What tensorstore's C++ code prints to stderr (fd 2) when it finds no credentials.
CREDENTIALS_NOTICE = re.compile(rb"^[EWI]\d{4} [\d:.]+ +\d+ google_auth_provider\.cc")

_reachable: set[tuple[str, str]] = set()
_listings: dict[str, _Listing] = {}  # root URL -> what it held when first asked


def storage_path(location: str | os.PathLike[str]) -> StoragePath:
    """A local :class:`pathlib.Path`, or an :class:`etils.epath.Path` for a URL.

    Raises:
      IcnnError: (exit 2) for a URL whose scheme icnn cannot read and write, or
        one without a bucket.
    """
    if isinstance(location, Path):
        return location
    if not isinstance(location, str) and is_remote(location):
        return cast("epath.Path", location)  # made by storage_path before: keep its listing
    text = os.fspath(location)
    match = URL.match(text)
    if match is None:
        return Path(text)
    scheme = match.group("scheme").lower()
    if scheme == "file":
        return Path(text[len("file://") :])
    if scheme not in supported_schemes():
        supported = ", ".join(f"{name}://" for name in supported_schemes())
        missing = (
            f" ({scheme}:// needs the {FILESYSTEM_PACKAGES[scheme]} package)"
            if scheme in FILESYSTEM_PACKAGES
            else ""
        )
        raise UnsupportedStorage(
            f"{text}: icnn reads and writes local paths and {supported}, not {scheme}://{missing}"
        )
    if not match.group("bucket"):
        raise IcnnError(f"{text}: names no bucket ({scheme}://BUCKET/PATH)")
    quiet_remote_logging()
    root = text.rstrip("/")
    _listings[root] = _Listing(root)  # a new command lists afresh
    return _listed_path_class()(root)


def supported_schemes() -> list[str]:
    """The URL schemes this installation reads and writes: those whose package is here."""
    import importlib.util

    return [
        scheme
        for scheme, package in FILESYSTEM_PACKAGES.items()
        if importlib.util.find_spec(package) is not None
    ]


def is_remote(path: Any) -> bool:
    """Whether ``path`` is a URL in object storage (not a local :class:`pathlib.Path`)."""
    return not isinstance(path, Path) and URL.match(str(path)) is not None


def orbax_path(path: Any) -> Any:
    """The path to hand Orbax: absolute where local (Orbax resolves from the cwd otherwise).

    A URL goes as a plain :class:`etils.epath.Path`: Orbax must see its own writes,
    not a listing taken before them.
    """
    if is_remote(path):
        from etils import epath

        return epath.Path(str(path))
    return path.absolute()


def files_under(path: Any) -> list[str]:
    """The names, relative to ``path``, of every object under the URL ``path`` (fresh)."""
    listing = _Listing(str(path))
    listing.load()
    prefix = f"{path}/"
    return sorted(name[len(prefix) :] for name in listing.files or () if name.startswith(prefix))


def forget_listing(path: Any) -> None:
    """Drop the listings that cover ``path`` (after writing there)."""
    text = str(path)
    for root in [root for root in _listings if _covers(root, text) or _covers(text, root)]:
        _listings[root] = _Listing(root)


def _covers(root: str, text: str) -> bool:
    return text == root or text.startswith(root + "/")


class _Listing:
    """Every object under a root URL, listed in one request (per 1,000 objects) when first asked.

    gcsfs answers ``exists()``/``is_file()`` of a missing object with two requests
    each, and the reading side asks about many files that a layout does not have
    (``checkpoint``, ``orbax.checkpoint``, ``metadata``...): from a listing, a
    100-leaf ``inspect`` makes fewer requests than Orbax's own ``metadata()``.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.files: set[str] | None = None
        self.directories: set[str] = set()

    def load(self) -> None:
        if self.files is not None:
            return
        from etils.epath import backend

        scheme = self.root.split("://", 1)[0]
        bare_root = self.root.split("://", 1)[1]
        file_system = backend.fsspec_backend.fs(self.root)
        try:
            names = file_system.find(f"{self.root}/")
        except FileNotFoundError:  # gcsfs: the bucket does not exist; said by the caller
            names = []
        if not names:
            names = [bare_root] if file_system.isfile(self.root) else []
        files, directories = set(), set()
        for name in names:
            marker = name.endswith("/")  # a "directory" object some tools create
            name = f"{scheme}://{name.rstrip('/')}"
            (directories if marker else files).add(name)
            parent = name.rsplit("/", 1)[0]
            while _covers(self.root, parent) and parent not in directories:
                directories.add(parent)
                parent = parent.rsplit("/", 1)[0]
        self.files, self.directories = files, directories

    def is_file(self, text: str) -> bool:
        self.load()
        return text in (self.files or ())

    def is_dir(self, text: str) -> bool:
        self.load()
        return text in self.directories

    def children(self, text: str) -> list[str]:
        self.load()
        prefix = text + "/"
        return sorted(
            {
                name[len(prefix) :].split("/", 1)[0]
                for name in (*(self.files or ()), *self.directories)
                if name.startswith(prefix)
            }
        )


def _listing_of(path: Any) -> _Listing | None:
    text = str(path)
    for root, listing in _listings.items():
        if _covers(root, text):
            return listing
    return None


_listed_path_type: list[type] = []


def _listed_path_class() -> type:
    """``ListedPath``: an :class:`etils.epath.Path` that answers from its root's listing."""
    if _listed_path_type:
        return _listed_path_type[0]
    from etils.epath import gpath

    class ListedPath(gpath.PosixGPath):
        def exists(self) -> bool:
            listing = _listing_of(self)
            if listing is None:
                return super().exists()
            return listing.is_file(str(self)) or listing.is_dir(str(self))

        def is_file(self) -> bool:
            listing = _listing_of(self)
            return super().is_file() if listing is None else listing.is_file(str(self))

        def is_dir(self) -> bool:
            listing = _listing_of(self)
            return super().is_dir() if listing is None else listing.is_dir(str(self))

        def iterdir(self) -> Iterator[Any]:
            listing = _listing_of(self)
            if listing is None:
                yield from super().iterdir()
                return
            if not listing.is_dir(str(self)):
                raise FileNotFoundError(str(self))
            for name in listing.children(str(self)):
                yield self / name

    _listed_path_type.append(ListedPath)
    return ListedPath


def file_size(path: Any) -> int:
    """The size in bytes of the file at ``path``."""
    if is_remote(path):
        return int(path.stat().length or 0)
    return path.stat().st_size


def bucket_and_key(path: Any) -> tuple[str, str, str]:
    """``(scheme, bucket, key)`` of a URL: ``gs://b/x/y`` -> ``("gs", "b", "x/y")``."""
    match = URL.match(str(path))
    if match is None:
        raise ValueError(f"not a URL: {path}")
    return match.group("scheme").lower(), match.group("bucket"), match.group("key").strip("/")


def kvstore_spec(path: Any) -> Any:
    """Tensorstore's kvstore spec of the directory ``path`` (``file://`` where local)."""
    if not is_remote(path):
        return f"file://{path.absolute()}/"
    scheme, bucket, key = bucket_and_key(path)
    return {"driver": KVSTORE_DRIVERS[scheme], "bucket": bucket, "path": f"{key}/" if key else ""}


def missing_bucket(path: Any) -> str | None:
    """``gs://bucket`` when the bucket of ``path`` does not exist, else ``None``."""
    scheme, bucket, _ = bucket_and_key(path)
    root = f"{scheme}://{bucket}"
    from etils import epath

    try:
        return None if epath.Path(root).exists() else root
    except (OSError, ValueError):
        return None


def tensorstore_context(path: Any = None, retries: dict[str, Any] = READ_RETRIES) -> Any:
    """A tensorstore context whose object-storage requests give up after ``retries``.

    For a URL it also keeps a small cache: without one, tensorstore fetches the
    OCDBT manifest and b-tree nodes again for every leaf (48 requests for the
    manifest alone in a 23-leaf ``inspect --stats``).
    """
    import tensorstore as ts

    spec: dict[str, Any] = {"gcs_request_retries": retries, "s3_request_retries": retries}
    if path is not None and is_remote(path):
        spec["cache_pool"] = {"total_bytes_limit": REMOTE_CACHE_BYTES}
    return ts.Context(spec)


def quiet_remote_logging() -> None:
    """Keep gcsfs's and google-auth's own log lines off stderr: icnn reports in one line."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def check_reachable(path: Any) -> None:
    """Make one request to ``path``'s bucket; a network failure exits 1 in plain words.

    Also sets up tensorstore's credentials while its stderr notice (printed when no
    credentials exist, e.g. with an emulator) is held back, once per process; gcsfs
    retries a refused connection for about 33 s, this probe for well under one.
    """
    if not is_remote(path):
        return
    scheme, bucket, _ = bucket_and_key(path)
    if (scheme, bucket) in _reachable:
        return
    import tensorstore as ts

    spec = {"driver": KVSTORE_DRIVERS[scheme], "bucket": bucket}
    # A key range holding no key: the answer lists nothing, whatever the bucket holds.
    nothing = ts.KvStore.KeyRange(inclusive_min="", exclusive_max="\x01")
    try:
        with stderr_notices_held_back():
            context = tensorstore_context(retries=PROBE_RETRIES)
            store = ts.KvStore.open(spec, context=context).result()
            store.list(nothing).result()
    except (ValueError, RuntimeError) as error:
        raise StorageFailure(
            f"{path}: cannot reach {scheme}://{bucket} ({_network_words(error)})"
        ) from None
    _reachable.add((scheme, bucket))


def _network_words(error: BaseException) -> str:
    text = str(error)
    if "NOT_FOUND" in text:
        return "the bucket does not exist"
    if "Could not connect" in text or "curl_code='7'" in text:
        return "connection refused: is the network or the storage endpoint up?"
    if "resolve" in text.lower():
        return "host name not found: is the network up?"
    if "timed out" in text.lower() or "curl_code='28'" in text:
        return "timed out"
    return first_line(error, limit=120)


@contextlib.contextmanager
def stderr_notices_held_back() -> Iterator[None]:
    """Hold back what C++ code writes to fd 2 meanwhile; pass on all but known notices."""
    try:
        original = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(original, 2)
            os.close(original)
            held.seek(0)
            lines = held.read().splitlines(True)
            kept = [line for line in lines if not CREDENTIALS_NOTICE.match(line)]
            if kept:
                os.write(2, b"".join(kept))


def remote_failure(
    error: BaseException, path: Any = None, parameter: str | None = None
) -> IcnnError | None:
    """A library exception from object storage in plain words, or ``None`` if it is not one.

    gcsfs raises ``HttpError`` (with ``.code``) for refused requests and
    ``FileNotFoundError`` naming ``b/<bucket>/o`` for a bucket that does not exist. The
    words are about ``path``, given as the argument ``parameter`` when there is one.
    """
    found = _remote_problem(error)
    if found is None:
        return None
    kind, problem = found
    if path is None:
        return kind(problem)
    if parameter is not None:
        return kind(problem, parameter, path)
    return kind(f"{path}: {problem}")


def _remote_problem(error: BaseException) -> tuple[type[IcnnError], str] | None:
    code = getattr(error, "code", None)
    if type(error).__name__ == "HttpError" and isinstance(code, int):
        if code == 401:
            return UsageError, (
                "no credentials accepted for object storage (Google's libraries look in "
                "GOOGLE_APPLICATION_CREDENTIALS, then 'gcloud auth application-default login', "
                "then the metadata server)"
            )
        if code == 403:
            return UsageError, "permission denied by object storage"
        if code == 404:
            return NotACheckpoint, "not found in object storage"
        return StorageFailure, f"object storage answered HTTP {code}"
    if isinstance(error, FileNotFoundError):
        match = re.search(r"\bb/([^/\s']+)/o\b", str(error))
        if match:
            return UsageError, f"bucket {match.group(1)!r} does not exist"
    if type(error).__module__.startswith(("aiohttp", "google.auth")):
        return StorageFailure, f"cannot reach object storage ({first_line(error, 120)})"
    return None
