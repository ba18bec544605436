"""A small synthetic chest CT built here, so the report tests do not depend on io.phantom."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG


@dataclass
class SyntheticCase:
    ct: CTVolume
    lungs: np.ndarray
    infection: np.ndarray
    probability: np.ndarray


def make_synthetic_case(shape=(40, 64, 80), spacing_mm=(4.0, 4.0, 6.0)) -> SyntheticCase:
    """Ellipse body (soft tissue, 40 HU) in air, two ellipsoid lungs (-850 HU), a GGO blob
    (-300 HU) in the right lung's lower half (right = small x) and a small one in the left lung.

    Anisotropic spacing (x, y 4 mm; z 6 mm) so the renderers' aspect handling is exercised.
    """
    nz, ny, nx = shape
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = ((y - ny / 2) / (0.42 * ny)) ** 2 + ((x - nx / 2) / (0.46 * nx)) ** 2 <= 1
    hu[body] = 40.0

    def ellipsoid(cx):
        return (
            ((z - nz / 2) / (0.42 * nz)) ** 2
            + ((y - ny / 2) / (0.3 * ny)) ** 2
            + ((x - cx) / (0.16 * nx)) ** 2
        ) <= 1

    lungs = np.zeros(shape, dtype=np.uint8)
    lungs[ellipsoid(0.3 * nx)] = RIGHT_LUNG
    lungs[ellipsoid(0.7 * nx)] = LEFT_LUNG
    hu[lungs > 0] = -850.0

    def blob(cz, cy, cx, r):
        return ((z - cz) ** 2 * 1.5**2 + (y - cy) ** 2 + (x - cx) ** 2) <= r**2

    infection = (blob(0.35 * nz, 0.6 * ny, 0.28 * nx, 7) & (lungs == RIGHT_LUNG)) | (
        blob(0.6 * nz, 0.5 * ny, 0.72 * nx, 3) & (lungs == LEFT_LUNG)
    )
    hu[infection] = -300.0
    # Probability: high inside the lesions, fading out over a few voxels.
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(~infection)
    probability = np.clip(1.0 - distance / 4.0, 0.0, 1.0).astype(np.float32) * (lungs > 0)
    probability[infection] = np.maximum(probability[infection], 0.9)
    geometry = Geometry(spacing_mm=spacing_mm, origin_mm=(-160.0, -128.0, -120.0))
    metadata = {
        "PatientName": "DOE^JANE",
        "PatientID": "PID-0042",
        "PatientBirthDate": "19610203",
        "PatientSex": "F",
        "StudyDate": "20200415",
        "StudyDescription": "CT CHEST W/O CONTRAST",
        "AccessionNumber": "ACC-77",
        "Modality": "CT",
        "warnings": [],
    }
    ct = CTVolume(hu=hu, geometry=geometry, source="synthetic report case", metadata=metadata)
    return SyntheticCase(ct=ct, lungs=lungs, infection=infection.astype(np.uint8), probability=probability)


@pytest.fixture(scope="session")
def synthetic_case() -> SyntheticCase:
    return make_synthetic_case()
