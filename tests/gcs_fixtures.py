"""The session-wide ``gcs_emulator`` fixture: a local GCS that ``gs://`` paths reach.

Registered from ``tests/conftest.py`` (``pytest_plugins = ["tests.gcs_fixtures"]``).
The fixture starts one emulator process for the session and points this process and
its subprocesses at it through the environment (see ``tests/gcs_emulator.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.gcs_emulator import VARIABLES_TO_UNSET, GcsEmulator, running_emulator

# Modules that read the emulator's variables once, at import: the gcsfs class chosen
# (GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT) and google-auth's metadata-server address and
# NO_GCE_CHECK. Imported before the fixture sets them, they would ignore it.
READ_AT_IMPORT = ("gcsfs", "google.auth.compute_engine._metadata")


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """A GCS emulator on 127.0.0.1 for the whole session, with the environment set.

    Yields an object with ``.port``, ``.env`` (the variables set), ``.bucket(name)``
    (creates it, returns ``"gs://name"``), ``.request_counts()`` (a Counter keyed
    ``"METHOD /path"``; ``.total()`` sums it), ``.reset_counts()`` and
    ``.requiring_authorization()`` (a context in which anonymous requests get 401).
    Buckets and objects persist across tests: use a bucket or prefix of your own.
    """
    stale = [name for name in READ_AT_IMPORT if name in sys.modules]
    if stale:
        raise RuntimeError(
            f"{', '.join(stale)} was imported before the gcs_emulator fixture set the "
            "environment it reads at import; import it inside the test instead"
        )
    with (
        running_emulator(tmp_path_factory.mktemp("gcs-emulator")) as emulator,
        pytest.MonkeyPatch.context() as patch,
    ):
        for name, value in emulator.env.items():
            patch.setenv(name, value)
        for name in VARIABLES_TO_UNSET:
            patch.delenv(name, raising=False)
        forget_cached_filesystems()
        try:
            yield emulator
        finally:
            forget_cached_filesystems()


def forget_cached_filesystems() -> None:
    """Drop the gcsfs instances that fsspec and etils.epath keep per process.

    Either cache would hand a later test a file system made for an earlier endpoint.
    """
    gcsfs = sys.modules.get("gcsfs")
    if gcsfs is not None:
        gcsfs.GCSFileSystem.clear_instance_cache()
        gcsfs.core.GCSFileSystem.clear_instance_cache()
    epath_backend = sys.modules.get("etils.epath.backend")
    if epath_backend is not None:
        epath_backend.fsspec_backend._get_filesystem.cache_clear()
