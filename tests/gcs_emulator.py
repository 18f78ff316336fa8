"""A local Google Cloud Storage emulator that Orbax (gcsfs and tensorstore) can write to.

``gcp-storage-emulator`` serves GCS's JSON API, but sends no ``x-goog-generation``
header on reads and ignores the ``ifGenerationMatch`` / ``ifGenerationNotMatch``
preconditions. Tensorstore's ``gcs`` driver relies on both (a read without the header
fails with "Malformed StorageGeneration", e.g. on ``manifest.ocdbt``), so this module
wraps the emulator's object handlers to add the headers and enforce the preconditions
(412 Precondition Failed, or 304 Not Modified for a read whose generation did not
change). It also counts requests, so a test or benchmark can read how many requests a
command made: ``GET /_counts`` answers ``{"total": N, "requests": {"GET /path": n}}``
and ``POST /_counts/reset`` zeroes them (neither is counted). ``POST /_auth/require``
makes every later request without an ``Authorization`` header fail with GCS's 401
(what an anonymous caller gets from a private bucket); ``POST /_auth/allow`` undoes it.

The server runs as its own process, its output in a log file, never on a pipe the
tests inherit (an orphaned emulator holding such a pipe keeps pytest from exiting)::

    python -m tests.gcs_emulator --port 0 --port-file PORT_FILE --log LOG_FILE

Example::

    with running_emulator(tmp_path) as emulator:
        os.environ.update(emulator.env)  # before gcsfs or google.auth is imported
        checkpointer.save(emulator.bucket("ckpts") + "/step", tree)
        print(emulator.request_counts().total())
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

# Port 9 (discard) is closed here, so a metadata-server probe fails at once instead of
# waiting for a timeout; google-auth and tensorstore read these to find the GCE server.
UNREACHABLE_METADATA_SERVER = "127.0.0.1:9"

# Credentials that google-auth would otherwise find and send; tests must run without.
VARIABLES_TO_UNSET = ("GOOGLE_APPLICATION_CREDENTIALS",)

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


def emulator_environment(port: int, config_dir: Path | str) -> dict[str, str]:
    """The environment that points gcsfs, google-auth and tensorstore at the emulator.

    gcsfs and google-auth read some of these at import and fsspec caches file systems,
    so they must be in ``os.environ`` before the first ``gs://`` access of a process.
    Also remove :data:`VARIABLES_TO_UNSET` from the environment.

    Args:
        port: the emulator's port on 127.0.0.1.
        config_dir: an empty directory standing in for gcloud's configuration, so no
            user credentials are found.

    Returns:
        Variable names to values.
    """
    url = f"http://127.0.0.1:{port}"
    return {
        # gcsfs (and google-cloud-storage) send every request here, unauthenticated.
        "STORAGE_EMULATOR_HOST": url,
        # tensorstore's gcs driver; with no credentials it sends unauthenticated requests.
        "TENSORSTORE_GCS_HTTP_URL": url,
        # Otherwise gcsfs first tries a TLS gRPC bucket lookup and waits ~60 s per bucket.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "NO_GCE_CHECK": "true",
        "CLOUDSDK_CONFIG": str(config_dir),
        "GCE_METADATA_HOST": UNREACHABLE_METADATA_SERVER,
        "GCE_METADATA_IP": UNREACHABLE_METADATA_SERVER,
        "GCE_METADATA_ROOT": UNREACHABLE_METADATA_SERVER,
    }


# ---------------------------------------------------------------------------------------
# Client side: start, wait for, talk to and stop the emulator process.


@dataclass
class GcsEmulator:
    """A running emulator: where it listens and how to read its request counts.

    Attributes:
        port: its port on 127.0.0.1.
        env: :func:`emulator_environment` for it.
        log_path: the file its output goes to.
    """

    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (if it does not exist yet) and return ``"gs://name"``."""
        body = json.dumps({"name": name}).encode()
        try:
            self._call("POST", "/storage/v1/b?project=test", body)
        except urllib.error.HTTPError as error:
            if error.code != HTTPStatus.CONFLICT:
                raise
        return f"gs://{name}"

    def request_counts(self) -> Counter[str]:
        """Requests since the last reset, keyed ``"METHOD /path"`` (path unquoted)."""
        return Counter(json.loads(self._call("GET", "/_counts"))["requests"])

    def reset_counts(self) -> None:
        self._call("POST", "/_counts/reset")

    @contextlib.contextmanager
    def requiring_authorization(self) -> Iterator[None]:
        """Answer requests without an Authorization header with GCS's 401 meanwhile."""
        self._call("POST", "/_auth/require")
        try:
            yield
        finally:
            self._call("POST", "/_auth/allow")

    def log_tail(self, characters: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except OSError:
            return ""

    def _call(self, method: str, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        # No proxy: an http_proxy in the environment must not see loopback traffic.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            return response.read()


@contextlib.contextmanager
def running_emulator(tmp_dir: Path | str) -> Iterator[GcsEmulator]:
    """Start the emulator on a free port of 127.0.0.1; stop it on exit.

    The process binds port 0 itself and reports the port it got, so no other process
    can take the port between choosing and binding it. Its output goes to
    ``tmp_dir/gcs-emulator.log``. The environment of this process is not changed.

    Args:
        tmp_dir: a directory for the log, the port file and the empty gcloud config.

    Yields:
        The running :class:`GcsEmulator`.
    """
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    config_dir = tmp_dir / "gcloud-config"
    config_dir.mkdir(exist_ok=True)
    port_file = tmp_dir / "gcs-emulator.port"
    port_file.unlink(missing_ok=True)
    log_path = tmp_dir / "gcs-emulator.log"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--port=0",
        f"--port-file={port_file}",
        f"--log={log_path}",
        f"--parent-pid={os.getpid()}",
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    emulator = GcsEmulator(port=0, env={}, log_path=log_path, process=process)
    try:
        emulator.port = _wait_for_port(process, port_file, emulator)
        emulator.env = emulator_environment(emulator.port, config_dir)
        _wait_until_answering(process, emulator)
        emulator.reset_counts()  # the readiness probes are not the caller's requests
        yield emulator
    finally:
        _stop(process)


def _wait_for_port(process: subprocess.Popen[bytes], port_file: Path, emulator: GcsEmulator) -> int:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if port_file.exists():
            return int(port_file.read_text())
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError(f"GCS emulator did not start; its log ends:\n{emulator.log_tail()}")


def _wait_until_answering(process: subprocess.Popen[bytes], emulator: GcsEmulator) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            emulator._call("GET", "/")
            return
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    raise RuntimeError(f"GCS emulator does not answer; its log ends:\n{emulator.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ---------------------------------------------------------------------------------------
# Server side: gcp-storage-emulator with generations, preconditions and request counts.

Handler = Callable[[Any, Any, Any], None]

_READ = "read"
_WRITE = "write"
_DELETE = "delete"

UNAUTHORIZED_BODY = {
    "error": {
        "code": 401,
        "message": "Anonymous caller does not have storage.objects.get access to the "
        "Google Cloud Storage object. Permission 'storage.objects.get' denied on resource "
        "(or it may not exist).",
        "errors": [{"domain": "global", "reason": "required", "message": "Login Required"}],
    }
}


def _precondition(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    return int(values[0]) if values else None


def _precondition_status(
    kind: str, query: dict[str, list[str]], current: dict | None
) -> int | None:
    """The status GCS answers when a precondition fails, or None when all hold.

    https://cloud.google.com/storage/docs/request-preconditions: on writes and deletes a
    failed precondition is 412; on reads ``ifGenerationNotMatch`` and
    ``ifMetagenerationNotMatch`` give 304 (nothing changed) and the others 412.
    ``ifGenerationMatch=0`` means "only if the object does not exist".
    """
    generation = int(current["generation"]) if current else 0
    metageneration = int(current["metageneration"]) if current else None
    match = _precondition(query, "ifGenerationMatch")
    not_match = _precondition(query, "ifGenerationNotMatch")
    meta_match = _precondition(query, "ifMetagenerationMatch")
    meta_not_match = _precondition(query, "ifMetagenerationNotMatch")
    if kind != _WRITE and current is None:
        return None  # the handler answers 404
    if match is not None and match != generation:
        return HTTPStatus.PRECONDITION_FAILED
    if meta_match is not None and meta_match != metageneration:
        return HTTPStatus.PRECONDITION_FAILED
    unchanged = HTTPStatus.NOT_MODIFIED if kind == _READ else HTTPStatus.PRECONDITION_FAILED
    if not_match is not None and current is not None and not_match == generation:
        return unchanged
    if meta_not_match is not None and current is not None and meta_not_match == metageneration:
        return unchanged
    return None


def _object_name(request: Any, storage: Any) -> str | None:
    params = request.params or {}
    if params.get("object_id"):
        return params["object_id"]
    if "upload_id" in request.query:
        resumable = storage.resumable.get(request.query["upload_id"][0])
        return resumable.get("name") if resumable else None
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data
    if isinstance(data, dict):
        meta = data.get("meta", data)
        if isinstance(meta, dict):
            return meta.get("name")
    return None


def _with_generations(kind: str, handler: Handler) -> Handler:
    """Wrap an object handler: check preconditions first, add generation headers after."""

    @functools.wraps(handler)
    def wrapped(request: Any, response: Any, storage: Any) -> None:
        bucket = (request.params or {}).get("bucket_name")
        name = _object_name(request, storage)
        current = storage.objects.get(bucket, {}).get(name) if name else None
        is_upload_chunk = "upload_id" in request.query and kind == _WRITE
        status = None
        if name is not None and not (is_upload_chunk and _is_partial_chunk(request)):
            status = _precondition_status(kind, request.query, current)
        if status is not None:
            _ = request.data  # read the body so the client sees the answer, not a reset
            response.status = HTTPStatus(status)
            if current is not None:
                _set_generation_headers(response, current)
            if status == HTTPStatus.PRECONDITION_FAILED:
                message = "At least one of the pre-conditions you specified did not hold."
                response.json(_error_body(status, message, reason="conditionNotMet"))
            return
        handler(request, response, storage)
        if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT) and name:
            stored = storage.objects.get(bucket, {}).get(name)
            if stored is not None:
                _set_generation_headers(response, stored)

    return wrapped


def _is_partial_chunk(request: Any) -> bool:
    # Preconditions apply when the upload completes; a chunk before that is only stored.
    content_range = request.get_header("Content-Range", "") or ""
    return content_range.endswith("/*")


def _set_generation_headers(response: Any, stored: dict) -> None:
    response["x-goog-generation"] = str(stored["generation"])
    response["x-goog-metageneration"] = str(stored["metageneration"])
    if stored.get("size") is not None:
        response["x-goog-stored-content-length"] = str(stored["size"])
    response["x-goog-stored-content-encoding"] = "identity"


def _error_body(status: int, message: str, reason: str = "invalid") -> dict:
    error = {"domain": "global", "reason": reason, "message": message}
    return {"error": {"code": int(status), "message": message, "errors": [error]}}


def _with_not_found_body(handler: Handler) -> Handler:
    """Give a bare 404 the JSON body GCS sends, so clients raise with GCS's message."""

    @functools.wraps(handler)
    def wrapped(request: Any, response: Any, storage: Any) -> None:
        handler(request, response, storage)
        if response.status != HTTPStatus.NOT_FOUND or response._content:
            return
        bucket = (request.params or {}).get("bucket_name")
        name = _object_name(request, storage)
        if bucket is not None and bucket not in storage.buckets:
            message = "The specified bucket does not exist."
        else:
            message = f"No such object: {bucket}/{name}"
        response.json(_error_body(HTTPStatus.NOT_FOUND, message, reason="notFound"))

    return wrapped


def _patch_emulator_handlers() -> None:
    """Wrap the handlers in the emulator's routing table, in place (once a process)."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    if getattr(server, "_icnn_patched", False):
        return
    server._icnn_patched = True

    kinds = {
        objects.get: _READ,
        objects.download: _READ,
        objects.insert: _WRITE,
        objects.upload_partial: _WRITE,
        objects.xml_upload: _WRITE,
        objects.patch: _WRITE,
        objects.delete: _DELETE,
    }
    for _pattern, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in kinds:
                handlers[method] = _with_generations(kinds[handler], handler)
            handlers[method] = _with_not_found_body(handlers[method])
    # The router falls back to objects.insert for uploads posted without /upload; insert
    # is not called from inside the module, so replacing the attribute wraps only that.
    objects.insert = _with_not_found_body(_with_generations(_WRITE, objects.insert))


def _suffix_range_to_absolute(request_handler: Any, storage: Any) -> HTTPStatus | None:
    """Turn ``Range: bytes=-N`` into ``bytes=START-``; 416 when a range starts past the end.

    The emulator understands only ``bytes=START-[END]`` and answers a suffix range with
    the whole object.
    """
    range_header = request_handler.headers.get("Range")
    if not range_header or not range_header.strip().startswith("bytes="):
        return None
    spec = range_header.strip()[len("bytes=") :]
    path = unquote(urlparse(request_handler.path).path)
    for prefix in ("/download/storage/v1/b/", "/storage/v1/b/", "/b/"):
        if path.startswith(prefix):
            bucket, _, name = path[len(prefix) :].partition("/o/")
            break
    else:
        return None
    stored = storage.objects.get(bucket, {}).get(name)
    if stored is None or stored.get("size") is None:
        return None
    size = int(stored["size"])
    start_text, _, end_text = spec.partition("-")
    if not start_text:
        start = max(0, size - int(end_text))
        del request_handler.headers["Range"]
        request_handler.headers["Range"] = f"bytes={start}-"
        return None
    if int(start_text) >= size:
        return HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
    return None


class _Counts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"total": sum(self._counts.values()), "requests": dict(self._counts)}

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


def make_server(port: int) -> Any:
    """An HTTP server for the patched emulator on 127.0.0.1:``port`` (0: any free port).

    Requests are accepted on threads (tensorstore opens many connections at once; a
    single-threaded server's listen backlog of 5 would drop some) but handled one at a
    time, since the emulator's storage is not thread-safe.
    """
    from http.server import ThreadingHTTPServer

    from gcp_storage_emulator import server as emulator_server
    from gcp_storage_emulator.storage import Storage

    _patch_emulator_handlers()
    storage = Storage(use_memory_fs=True)
    counts = _Counts()
    handling = threading.Lock()
    require_auth = threading.Event()

    class RequestHandler(emulator_server.RequestHandler):
        def _dispatch(self, method: str) -> None:
            path = urlparse(self.path).path
            if path.startswith(("/_counts", "/_auth")):
                self._control(method, path)
                return
            counts.add(f"{method} {unquote(path)}")
            if require_auth.is_set() and not self.headers.get("Authorization"):
                self._answer(HTTPStatus.UNAUTHORIZED, UNAUTHORIZED_BODY)
                return
            try:
                with handling:
                    status = _suffix_range_to_absolute(self, storage) if method == "GET" else None
                    if status is not None:
                        message = "The requested range cannot be satisfied."
                        self._answer(status, _error_body(status, message))
                        return
                    emulator_server.Router(self).handle(method)
            except (BrokenPipeError, ConnectionResetError):
                # gcsfs asks for an object and a listing at once and drops the loser.
                logging.info("client left before the answer to %s %s", method, path)

        def _control(self, method: str, path: str) -> None:
            if method == "GET" and path == "/_counts":
                self._answer(HTTPStatus.OK, counts.snapshot())
            elif method == "POST" and path == "/_counts/reset":
                counts.reset()
                self._answer(HTTPStatus.OK, {"total": 0, "requests": {}})
            elif method == "POST" and path in ("/_auth/require", "/_auth/allow"):
                (require_auth.set if path.endswith("require") else require_auth.clear)()
                self._answer(HTTPStatus.OK, {"require_auth": require_auth.is_set()})
            else:
                self._answer(HTTPStatus.NOT_FOUND, _error_body(404, "no such control"))

        def _answer(self, status: int, body: dict) -> None:
            content = json.dumps(body).encode()
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(int(status))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._dispatch("PUT")

        def do_PATCH(self) -> None:  # noqa: N802
            self._dispatch("PATCH")

        def do_DELETE(self) -> None:  # noqa: N802
            self._dispatch("DELETE")

        def do_HEAD(self) -> None:  # noqa: N802
            counts.add(f"HEAD {unquote(urlparse(self.path).path)}")
            self.send_error(HTTPStatus.NOT_IMPLEMENTED)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    return Server(("127.0.0.1", port), functools.partial(RequestHandler, storage))


def _exit_when_parent_dies(parent_pid: int) -> None:
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(0)
            time.sleep(1.0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0: any free")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once ready")
    parser.add_argument("--log", type=Path, help="append all output here instead")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    args = parser.parse_args(argv)
    if args.log is not None:
        log = open(args.log, "ab", buffering=0)  # noqa: SIM115 (held for the process)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    if args.parent_pid is not None:
        _exit_when_parent_dies(args.parent_pid)
    httpd = make_server(args.port)
    port = httpd.server_address[1]
    if args.port_file is not None:
        partial = args.port_file.with_suffix(".partial")
        partial.write_text(str(port))
        partial.replace(args.port_file)
    logging.info("GCS emulator listening on 127.0.0.1:%d", port)
    with contextlib.suppress(KeyboardInterrupt):
        httpd.serve_forever()


if __name__ == "__main__":
    main()
