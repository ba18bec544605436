"""Known answers of the bundled CHS-Net on scans stored other than in HU (io/hounsfield.py).

A scan exported through a display window to 0-255 (as the Radiopaedia cases of the public
COVID-19 CT segmentation set, window [-1250, 250]) must give the lungs and the grading the HU
file gives; read as HU it gave a normal scan CT-3 on 1 mL "lungs".
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.inference.pipeline import SegmentationSettings
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.io.readers import read_ct
from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.models.metrics import dice as mask_dice
from napari_chsnet.report.case import segment_case
from napari_chsnet.resources_path import bundled_weights_dir

pytestmark = [pytest.mark.slow, pytest.mark.default_precision]


@pytest.fixture(scope="module", autouse=True)
def bundled_weights():
    if not (bundled_weights_dir() / "chsnet.safetensors").is_file():
        pytest.skip(f"no bundled chsnet.safetensors in {bundled_weights_dir()}")


def export_8bit(pixels: np.ndarray, spacing_zyx, path):
    image = sitk.GetImageFromArray(pixels)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    sitk.WriteImage(image, str(path))
    return path


def segment(volume):
    return segment_case(volume, SegmentationSettings(device="cpu", mirror_averaging=False))


def test_a_phantom_exported_as_8bit_is_segmented_as_its_hu(tmp_path, windowed_8bit):
    """Unseen phantom (seed 7; training phantoms are 1000+), 30 % / 10 % involved. Measured: the two
    files' lungs agree to Dice 0.996 (each 0.978 against the phantom's); involvement right 23.1 % from
    HU, 22.2 % from 8-bit, left 5.7 % and 3.5 % (the 8-bit export clips above 250 HU and quantises
    ground glass to 6 HU steps)."""
    phantom = make_phantom(seed=7)
    from_hu = segment(phantom.ct)
    pixels = windowed_8bit(phantom.ct.hu)
    stored = read_ct(export_8bit(pixels, phantom.ct.geometry.spacing_zyx, tmp_path / "p.nii.gz"))
    assert stored.metadata["intensity"] == "display8"
    from_8bit = segment(stored)
    assert mask_dice(from_hu.lungs > 0, from_8bit.lungs > 0) >= 0.97
    for side in ("right", "left"):
        hu_side, eight_side = from_hu.severity.lungs[side], from_8bit.severity.lungs[side]
        assert eight_side.volume_ml == pytest.approx(hu_side.volume_ml, rel=0.05)
        assert abs(eight_side.involvement_pct - hu_side.involvement_pct) <= 5.0, side
    assert not any("far less than a lung" in w for w in from_8bit.severity.warnings)


@pytest.mark.realdata
def test_normal001_exported_as_8bit_stays_normal(shared_data, tmp_path, windowed_8bit):
    """The covid-ct-md control: under 1 % in both lungs from its HU file (card: 0.20 %); read as HU
    its 8-bit export gave CT-3 on a 1 mL right lung, read as display values it stays under 1 %."""
    hu_volume = read_ct(shared_data / "covid-ct-md" / "normal001_ct_hu.nii.gz")
    pixels = windowed_8bit(hu_volume.hu)
    path = export_8bit(pixels, hu_volume.geometry.spacing_zyx, tmp_path / "normal001_8bit.nii.gz")
    result = segment(read_ct(path))
    for side in ("right", "left"):
        lung = result.severity.lungs[side]
        assert lung.volume_ml > 1000, f"{side} lung {lung.volume_ml:.0f} mL"
        assert lung.involvement_pct < 1.0, f"{side} lung {lung.involvement_pct:.2f} %"
    reference = segment(hu_volume)
    assert mask_dice(reference.lungs > 0, result.lungs > 0) >= 0.95


def test_an_export_through_a_soft_tissue_window_is_flagged(tmp_path, windowed_8bit):
    """Through W400/L40 (-160…240 HU) normal lung is stored as 0, so ground glass is gone (on P001:
    lungs 2132 mL against 1458 mL from HU, the infection on the wrong side) and the report said only
    that densities were approximate. The lung-window export of the same phantom is not flagged."""
    phantom = make_phantom(seed=7, shape=(16, 256, 256))
    flagged = []
    for name, window in (("soft_tissue", (-160, 240)), ("lung", (-1250, 250))):
        pixels = windowed_8bit(phantom.ct.hu, window)
        path = export_8bit(pixels, phantom.ct.geometry.spacing_zyx, tmp_path / f"{name}.nii.gz")
        warnings = segment(read_ct(path)).run_info.warnings
        flagged.append([w for w in warnings if "window clipped the lungs" in w])
    soft_tissue, lung = flagged
    assert (
        len(soft_tissue) == 1
        and "% of the lung voxels hold the 8-bit export's darkest value" in soft_tissue[0]
    )
    assert lung == []


def test_a_scan_without_lungs_is_refused():
    """An abdomen, a neck or a volume of air got a report ("CT-0, normal", or a few mL of stray voxels
    graded CT-4); here a water cylinder, as a scanner's quality-control phantom."""
    hu = np.full((16, 256, 256), -1000.0, np.float32)
    y, x = np.ogrid[:256, :256]
    hu[:, (y - 128) ** 2 + (x - 128) ** 2 < 100**2] = 0.0
    hu += np.random.default_rng(0).normal(0, 10, hu.shape).astype(np.float32)
    water = CTVolume(hu, Geometry((0.8, 0.8, 2.5)), "water phantom")
    with pytest.raises(InvalidVolumeError, match=r"water phantom: no lungs found \(no slice holds more than"):
        segment(water)


def test_a_single_slice_is_segmented_but_no_lung_is_graded():
    """One slice of a chest holds real lungs (not refused), but no lung under 100 mL is graded."""
    phantom = make_phantom(seed=7, shape=(16, 256, 256))
    single = dataclasses.replace(phantom.ct, hu=phantom.ct.hu[8:9].copy())
    severity = segment(single).severity
    assert 0 < severity.right.volume_ml < 100 and 0 < severity.left.volume_ml < 100
    assert not (severity.right.measured or severity.left.measured or severity.overall_measured)


def test_a_volume_of_air_is_refused():
    """The bundled lung stage marks 11-13 cm² of "lung" per slice at the edge of a volume of air (a
    scan of nothing), above the smallest lung section: lungs lie inside a body, and this slice has none."""
    hu = np.random.default_rng(0).normal(-1000, 10, (12, 512, 512)).astype(np.float32)
    air = CTVolume(hu, Geometry((0.75, 0.75, 2.5)), "air")
    with pytest.raises(InvalidVolumeError, match=r"air: no lungs found \(.*cm² of body tissue\)"):
        segment(air)
