"""Fixtures shared by the TFDS builder tests."""

import pytest


class OfflineManager:
    """A download manager with a manual folder whose downloads fail like a lost network."""

    def __init__(self, manual_dir):
        self.manual_dir = manual_dir

    def download_and_extract(self, url):
        raise ConnectionError(f"offline: {url}")


@pytest.fixture
def offline_manager():
    """Return the class of a download manager that cannot reach the network."""
    return OfflineManager
