"""Shared fixtures: one torch thread, where the real (never committed) data lives, and phantom slices
laid out like COVID-SemiSeg."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$CHSNET_SHARED_DATA`` or ``<repo>/../shared/data``."""
    return Path(os.environ.get("CHSNET_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """Every test gets a throw-away user data folder: fine-tuned weights, the active choice and saved
    corrections never land in (or are read from) the real ``~/.local/share/napari-chsnet``."""
    monkeypatch.setenv("CHSNET_HOME", str(tmp_path_factory.mktemp("chsnet_home")))


@pytest.fixture(autouse=True)
def _float32_on_the_cpu(request, monkeypatch):
    """float32 on the CPU even where AMX would run bfloat16 (``inference.device``): the engine's tests
    check their logic to 1e-5, and bfloat16 moves a probability by up to 1e-3. Tests of the shipped
    figures (``default_precision``) run as a user's machine does."""
    if request.node.get_closest_marker("default_precision") is None:
        monkeypatch.setenv("CHSNET_CPU_BF16", "0")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread for the whole suite, set before any session fixture builds a network: the test
    networks are tiny, and on a shared 2-core machine two OpenMP threads wait on each other whenever
    another process holds a core (a training step measured 23 s with 2 threads, 0.13 s with 1)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; skips the test when it is absent (as on a user's machine)."""
    folder = shared_data_dir()
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} is absent (set CHSNET_SHARED_DATA to run this test)")
    return folder


# The window the Radiopaedia cases of the public COVID-19 CT segmentation set were exported through.
EXPORT_WINDOW_HU = (-1250.0, 250.0)


def _windowed_8bit(hu, window=EXPORT_WINDOW_HU):
    """``hu`` exported through ``window`` to 8-bit display values (0-255), as some public volumes are."""
    import numpy as np

    low, high = window
    return np.clip(np.round((np.asarray(hu, np.float32) - low) / (high - low) * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def windowed_8bit():
    """``windowed_8bit(hu, window=(-1250, 250)) -> uint8 array``."""
    return _windowed_8bit


def _write_semiseg_like(
    phantom, folder: Path, slices, truth, mask_folder: str = "masks"
) -> tuple[Path, Path]:
    """Phantom slices cropped to the lungs, in the display window as 8-bit JPEG, rotated like COVID-SemiSeg,
    with 0/255 PNG masks of ``truth`` (a phantom mask) in ``folder/mask_folder``."""
    import numpy as np
    from PIL import Image

    from napari_chsnet.inference.intensity import DISPLAY_WINDOW_HU
    from napari_chsnet.inference.preprocessing import lung_crop_box

    images, masks = folder / "images", folder / mask_folder
    images.mkdir(parents=True)
    masks.mkdir()
    box = lung_crop_box(phantom.lungs)
    for z in slices:
        pixels = _windowed_8bit(phantom.ct.hu[z, box.y0 : box.y1, box.x0 : box.x1], DISPLAY_WINDOW_HU)
        mask = (truth[z, box.y0 : box.y1, box.x0 : box.x1] > 0).astype(np.uint8) * 255
        Image.fromarray(np.rot90(pixels, 1)).save(images / f"slice_{z}.jpg")
        Image.fromarray(np.rot90(mask, 1)).save(masks / f"slice_{z}.png")
    return images, masks


@pytest.fixture(scope="session")
def write_semiseg_slices():
    """``write(phantom, folder, slices, truth, mask_folder="masks") -> (images, masks)``."""
    return _write_semiseg_like


# The 50 labelled COVID-SemiSeg training slices' names (the data set's own numbering).
SEMISEG_TRAIN_NAMES = [
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "10",
    "11",
    "12",
    "13",
    "14",
    "15",
    "16",
    "17",
    "19",
    "20",
    "23",
    "24",
    "25",
    "26",
    "27",
    "28",
    "29",
    "30",
    "31",
    "32",
    "33",
    "34",
    "35",
    "37",
    "39",
    "40",
    "41",
    "42",
    "43",
    "44",
    "45",
    "46",
    "47",
    "49",
    "50",
    "51",
    "52",
    "53",
    "54",
    "55",
    "56",
    "57",
    "58",
    "67",
]


@pytest.fixture
def semiseg_names_root(tmp_path) -> Path:
    """A COVID-SemiSeg root whose train/images holds empty files with the real slices' names."""
    images = tmp_path / "covid-semiseg" / "train" / "images"
    images.mkdir(parents=True)
    for name in SEMISEG_TRAIN_NAMES:
        (images / f"{name}.jpg").touch()
    return images.parents[1]
