"""Known answers of the synthetic chest CT."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from napari_chsnet.errors import ConfigError
from napari_chsnet.io.phantom import make_phantom
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG


@pytest.fixture(scope="module")
def phantom():
    start = time.perf_counter()
    result = make_phantom(seed=3, involvement_pct=(30.0, 10.0))
    result.seconds = time.perf_counter() - start
    return result


def test_default_phantom_is_fast(phantom):
    # 2 s on one free core; the margin covers the shared 2-core test machine
    assert phantom.seconds < 6.0, f"phantom took {phantom.seconds:.2f} s"


def test_right_lung_lies_at_small_x(phantom):
    centre_x = phantom.lungs.shape[2] / 2
    right_x = np.nonzero(phantom.lungs == RIGHT_LUNG)[2]
    left_x = np.nonzero(phantom.lungs == LEFT_LUNG)[2]
    assert right_x.max() < centre_x < left_x.min()


def test_involvement_matches_the_request(phantom):
    assert phantom.involvement_pct[RIGHT_LUNG] == pytest.approx(30.0, abs=0.01)
    assert phantom.involvement_pct[LEFT_LUNG] == pytest.approx(10.0, abs=0.01)
    voxel_ml = phantom.ct.geometry.voxel_volume_ml
    for label in (RIGHT_LUNG, LEFT_LUNG):
        in_lung = phantom.lungs == label
        assert phantom.lung_volume_ml[label] == pytest.approx(in_lung.sum() * voxel_ml)
        assert phantom.infected_ml[label] == pytest.approx(
            (in_lung & (phantom.infection == 1)).sum() * voxel_ml
        )
    assert not np.any(phantom.infection[phantom.lungs == 0]), "infection must lie inside the lungs"


def test_hounsfield_units_are_realistic(phantom):
    hu, lungs, infection = phantom.ct.hu, phantom.lungs, phantom.infection.astype(bool)
    assert hu.dtype == np.int16
    assert abs(np.median(hu[0, :5, :5]) + 1000) < 30, "air outside the body"
    assert -900 < np.median(hu[(lungs > 0) & ~infection]) < -780, "aerated lung"
    ggo = infection & ~phantom.consolidation
    assert -700 <= np.median(hu[ggo]) <= -300
    assert -100 <= np.median(hu[phantom.consolidation]) <= 50
    assert np.mean(hu > 650) > 0.002, "ribs, spine and sternum"
    assert (hu[(lungs > 0)] > 0).any(), "vessels inside the lungs"


def test_subpleural_consolidation_touches_the_pleura(phantom):
    outside_lung = phantom.lungs == 0
    touching = phantom.consolidation & ndimage.binary_dilation(outside_lung)
    assert touching.any()
    central = make_phantom(shape=(16, 96, 96), seed=3, subpleural_consolidation=False)
    assert not (central.consolidation & ndimage.binary_dilation(central.lungs == 0)).any()


def test_lungs_touch_anteriorly_on_request():
    def touching_voxels(lungs: np.ndarray) -> int:
        return int(
            ((lungs[..., 1:] == RIGHT_LUNG) & (lungs[..., :-1] == LEFT_LUNG)).sum()
            + ((lungs[..., 1:] == LEFT_LUNG) & (lungs[..., :-1] == RIGHT_LUNG)).sum()
        )

    assert touching_voxels(make_phantom(shape=(24, 128, 128), lungs_touch_anteriorly=True).lungs) > 0
    assert touching_voxels(make_phantom(shape=(24, 128, 128)).lungs) == 0


def test_same_seed_same_phantom_other_seed_other_phantom():
    first, again, other = (make_phantom(shape=(12, 64, 64), seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(first.ct.hu, again.ct.hu)
    np.testing.assert_array_equal(first.infection, again.infection)
    assert not np.array_equal(first.ct.hu, other.ct.hu)


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="involvement_pct"):
        make_phantom(shape=(12, 64, 64), involvement_pct=(120.0, 0.0))
    with pytest.raises(ConfigError, match="shape"):
        make_phantom(shape=(2, 8, 8))
    with pytest.raises(ConfigError, match="anatomy_variation"):
        make_phantom(shape=(12, 64, 64), anatomy_variation=0.5)


def test_anatomy_varies_within_its_bounds_and_keeps_the_known_answers():
    shape = (24, 128, 128)
    reference = make_phantom(shape, seed=5)
    np.testing.assert_array_equal(make_phantom(shape, seed=5, anatomy_variation=0.0).lungs, reference.lungs)
    volumes = []
    for seed in (11, 12, 13):
        varied = make_phantom(shape, seed=seed, anatomy_variation=0.12, involvement_pct=(30.0, 10.0))
        np.testing.assert_array_equal(
            varied.lungs, make_phantom(shape, seed=seed, anatomy_variation=0.12).lungs
        )
        for label in (RIGHT_LUNG, LEFT_LUNG):
            ratio = varied.lung_volume_ml[label] / reference.lung_volume_ml[label]
            assert 0.5 < ratio < 1.6, f"lung {label} volume ratio {ratio:.2f} to the reference anatomy"
        assert (
            abs(varied.involvement_pct[RIGHT_LUNG] - 30.0) < 0.1
            and abs(varied.involvement_pct[LEFT_LUNG] - 10.0) < 0.1
        )
        right_x, left_x = (np.nonzero(varied.lungs == label)[2].mean() for label in (RIGHT_LUNG, LEFT_LUNG))
        assert right_x < left_x
        volumes.append(varied.lung_volume_ml[RIGHT_LUNG])
    assert len(set(np.round(volumes, 1))) == 3, "each seed has its own anatomy"
