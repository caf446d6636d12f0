import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_config():
    from selfcorrect import config

    return config.load("tiny")


def gcs_client():
    """The real google-cloud-storage client, pointed at the emulator by STORAGE_EMULATOR_HOST
    with anonymous credentials: what the tests use to look behind selfcorrect.storage."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs_storage

    return gcs_storage.Client(project="local", credentials=AnonymousCredentials())


@pytest.fixture(scope="module")
def gcs():
    """An in-process GCS emulator on 127.0.0.1 with one bucket; yields "gs://selfcorrect-test".

    Port 0 lets the OS pick a free port with no race. STORAGE_EMULATOR_HOST points gcsfs (the
    library's gs://) and the google-cloud-storage client (the tests' own) at it; FSSPEC_GS_TOKEN
    =anon gives gcsfs anonymous credentials, here and in child processes (pipeline steps, ranks).
    """
    import fsspec.config
    from gcp_storage_emulator.server import create_server

    from selfcorrect import storage

    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        port = server._api._httpd.server_address[1]
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
            mp.setenv("GOOGLE_CLOUD_PROJECT", "local")
            mp.setenv("FSSPEC_GS_TOKEN", "anon")
            mp.setitem(fsspec.config.conf, "gs", {**fsspec.config.conf.get("gs", {}), "token": "anon"})
            storage._filesystem.cache_clear()
            try:
                gcs_client().create_bucket("selfcorrect-test")
                yield "gs://selfcorrect-test"
            finally:
                storage._filesystem.cache_clear()
    finally:
        server.stop()


@pytest.fixture
def gs_prefix(gcs, request):
    """A gs:// prefix unique to the test, so tests do not see each other's objects."""
    from selfcorrect import storage

    return storage.join(gcs, request.node.name)


@pytest.fixture(scope="module")
def s3():
    """A real S3 server (moto's, threaded in this process, over HTTP on 127.0.0.1) with one
    bucket; yields "s3://selfcorrect-test".

    AWS_ENDPOINT_URL points botocore, and so s3fs, at it with fixed test credentials; no
    AWS config file or instance metadata is consulted.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    from selfcorrect import storage

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        with pytest.MonkeyPatch.context() as mp:
            for name, value in S3_ENV.items():
                mp.setenv(name, value)
            mp.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
                mp.delenv(name, raising=False)
            storage._filesystem.cache_clear()
            try:
                boto3.client("s3").create_bucket(Bucket="selfcorrect-test")
                yield "s3://selfcorrect-test"
            finally:
                storage._filesystem.cache_clear()
    finally:
        server.stop()


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/nonexistent",
          "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
def s3_prefix(s3, request):
    """An s3:// prefix unique to the test."""
    from selfcorrect import storage

    return storage.join(s3, request.node.name)
