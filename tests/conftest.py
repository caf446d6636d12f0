import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_config():
    from selfcorrect import config

    return config.load("tiny")


@pytest.fixture(scope="module")
def gcs():
    """An in-process GCS emulator on 127.0.0.1 with one bucket; yields "gs://selfcorrect-test".

    Port 0 lets the OS pick a free port with no race; STORAGE_EMULATOR_HOST points the real
    google-cloud-storage client at it (selfcorrect.storage uses anonymous credentials then).
    """
    from gcp_storage_emulator.server import create_server

    from selfcorrect import storage

    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        port = server._api._httpd.server_address[1]
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
            mp.setenv("GOOGLE_CLOUD_PROJECT", "local")
            storage._client.cache_clear()
            try:
                storage._client().create_bucket("selfcorrect-test")
                yield "gs://selfcorrect-test"
            finally:
                storage._client.cache_clear()
    finally:
        server.stop()


@pytest.fixture
def gs_prefix(gcs, request):
    """A gs:// prefix unique to the test, so tests do not see each other's objects."""
    from selfcorrect import storage

    return storage.join(gcs, request.node.name)
