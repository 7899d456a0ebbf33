"""Shared fixtures: a tiny open_clip architecture saved to disk like real weights.

The tiny model goes through exactly the loading path users take (`--model CONFIG.json
--pretrained WEIGHTS`), only small enough to build, save and run in seconds on a CPU.
"""

import itertools
import os
import tempfile

# No test may reach the network: make huggingface_hub (used by open_clip downloads) fail fast
# offline, and keep caches out of the user's home. Set before anything imports them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HASHTAG_CACHE_DIR"] = tempfile.mkdtemp(prefix="hashtag-test-cache-")

import pytest

from benchmarks.tiny_clip import save_tiny_clip
from inference.loading import load_zero_shot
from inference.vocab import load_vocabulary


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory) -> tuple[str, str]:
    """(model-config JSON path, .safetensors weights path) of a random tiny CLIP."""
    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_model(tiny_clip_files):
    config_path, weights_path = tiny_clip_files
    return load_zero_shot(config_path, weights_path, load_vocabulary())


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the whole run (tests/postgres_server.py).

    Without PostgreSQL's binaries the PostgreSQL tests are skipped on a developer's machine,
    with the reason shown; in CI (`CI` set) they fail instead, so they never go missing unseen.
    """
    from tests.postgres_server import INSTALL_HINT, PostgresServer, find_binaries

    binaries = find_binaries()
    if binaries is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    server = PostgresServer(binaries)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server, request) -> str:
    """A fresh, empty database of its own for each test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return postgres_server.create_database(f"{name}_{next(_database_numbers)}")


_database_numbers = itertools.count()
