"""Small real videos shared by the data tests (written once per session)."""

import pytest

from clipadapt.data import synthetic


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """4 classes, 3 train + 1 test videos each, 12 frames of 32x32."""
    return synthetic.generate(
        tmp_path_factory.mktemp("synthetic"), num_classes=4, train_per_class=3, test_per_class=1,
        num_frames=12, size=32, seed=0,
    )


@pytest.fixture(scope="session")
def video_file(tiny_data):
    return tiny_data.root / "videos" / "00000.mp4"
