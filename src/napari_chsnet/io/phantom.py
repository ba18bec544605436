"""A procedurally generated chest CT with COVID-19-like lesions and exact ground truth.

Deterministic for a seed. Anatomy is drawn in normalised coordinates (u: right→left,
v: anterior→posterior, both in [-1, 1]; w: inferior→superior in [0, 1]) on the LPS display
grid, so the patient's right lung lies at small x. HU follow typical chest CT values: air
-1000, fat -100, soft tissue and blood 40, bone 700-1000, aerated lung about -850, ground-glass
-700…-300 and consolidation -100…+50. Lesions are the top quantile of a smooth random field
biased toward the periphery and the dependent (posterior) lung, as COVID-19 pneumonia usually
is, so the infected volume per lung matches the request to the voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_chsnet.errors import ConfigError
from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG

AIR_HU, FAT_HU, SOFT_TISSUE_HU, LUNG_HU = -1000.0, -100.0, 40.0, -850.0
BONE_HU, CORTEX_HU = 700.0, 1000.0
GGO_HU = (-700.0, -300.0)
CONSOLIDATION_HU = (-100.0, 50.0)
_CONSOLIDATION_FRACTION = 0.3  # share of the infected voxels that are consolidated


@dataclass(frozen=True)
class _Anatomy:
    """Scale factors of the reference anatomy (all 1 = the reference phantom)."""

    body_u: float = 1.0  # chest width
    body_v: float = 1.0  # chest depth
    lung_width: tuple[float, float] = (1.0, 1.0)  # right, left
    lung_depth: float = 1.0
    dome: tuple[float, float] = (1.0, 1.0)  # diaphragm dome heights, right, left
    heart: float = 1.0

    @staticmethod
    def varied(seed: int, amount: float) -> _Anatomy:
        """Each factor drawn uniformly from 1 ± ``amount`` (its own random stream: lesions stay seeded)."""
        if amount == 0:
            return _Anatomy()
        rng = np.random.default_rng([seed, 7])

        def factor() -> float:
            return float(1 + amount * rng.uniform(-1, 1))

        return _Anatomy(factor(), factor(), (factor(), factor()), factor(), (factor(), factor()), factor())


@dataclass
class Phantom:
    """A synthetic CT and its ground truth; per-lung figures are keyed by lung label (1 right, 2 left).

    Attributes:
        ct: the CT volume in HU (int16) on an LPS grid with identity direction.
        lungs: uint8 labels, 1 = right lung, 2 = left lung (vessels and small airways included;
            trachea and main bronchi excluded).
        infection: uint8, 1 = ground-glass or consolidation inside the lungs.
        consolidation: bool, the consolidated part of ``infection``.
        lung_volume_ml, infected_ml, involvement_pct: exact figures of the masks above.
    """

    ct: CTVolume
    lungs: np.ndarray
    infection: np.ndarray
    consolidation: np.ndarray
    lung_volume_ml: dict[int, float]
    infected_ml: dict[int, float]
    involvement_pct: dict[int, float]


class _Grid:
    """Normalised voxel-centre coordinates and mm scales of a (z, y, x) grid."""

    def __init__(self, shape: tuple[int, int, int], spacing_mm: tuple[float, float, float]) -> None:
        nz, ny, nx = shape
        self.shape = shape
        self.u = ((np.arange(nx, dtype=np.float32) + 0.5) / nx * 2 - 1)[None, None, :]
        self.v = ((np.arange(ny, dtype=np.float32) + 0.5) / ny * 2 - 1)[None, :, None]
        self.w = ((np.arange(nz, dtype=np.float32) + 0.5) / nz)[:, None, None]
        # the voxel size along (x, y, z)
        self.spacing_mm = np.array(spacing_mm, dtype=float)

    def ellipse(self, cu: float, cv: float, au: float, av: float) -> np.ndarray:
        """Squared normalised radius of an axial ellipse, shape (1, ny, nx)."""
        return ((self.u - cu) / au) ** 2 + ((self.v - cv) / av) ** 2

    def to_index(self, point: np.ndarray) -> np.ndarray:
        """Normalised (u, v, w) → fractional voxel index (x, y, z)."""
        nz, ny, nx = self.shape
        return np.array([(point[0] + 1) / 2 * nx - 0.5, (point[1] + 1) / 2 * ny - 0.5, point[2] * nz - 0.5])


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], coarse: tuple[int, int, int]
) -> np.ndarray:
    """Smooth unit-variance random field: coarse white noise, blurred and upsampled linearly."""
    noise = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 1.0, mode="wrap")
    field = ndimage.zoom(noise, [s / c for s, c in zip(shape, coarse, strict=True)], order=1, mode="nearest")
    field = field[: shape[0], : shape[1], : shape[2]]
    return (field - field.mean()) / (field.std() + 1e-6)


def _paint_tube(
    target: np.ndarray,
    grid: _Grid,
    start: np.ndarray,
    end: np.ndarray,
    radius_mm: float,
    value: float | bool,
    where: np.ndarray | None = None,
) -> None:
    """Set ``target`` to ``value`` within ``radius_mm`` of the segment start→end (normalised points)."""
    p0, p1 = grid.to_index(start), grid.to_index(end)
    radius_vox = radius_mm / grid.spacing_mm
    low = np.maximum(np.floor(np.minimum(p0, p1) - radius_vox), 0).astype(int)
    high = np.minimum(np.ceil(np.maximum(p0, p1) + radius_vox) + 1, np.array(grid.shape[::-1])).astype(int)
    if np.any(high <= low):
        return
    zz, yy, xx = np.meshgrid(*(np.arange(low[a], high[a]) for a in (2, 1, 0)), indexing="ij")
    points_mm = np.stack([xx, yy, zz], axis=-1) * grid.spacing_mm
    a_mm, b_mm = p0 * grid.spacing_mm, p1 * grid.spacing_mm
    axis = b_mm - a_mm
    t = np.clip(((points_mm - a_mm) @ axis) / max(float(axis @ axis), 1e-9), 0, 1)
    inside = np.linalg.norm(points_mm - (a_mm + t[..., None] * axis), axis=-1) <= radius_mm
    box = (slice(low[2], high[2]), slice(low[1], high[1]), slice(low[0], high[0]))
    if where is not None:
        inside &= where[box]
    target[box][inside] = value


def _branches(
    rng: np.random.Generator,
    start: np.ndarray,
    direction: np.ndarray,
    length: float,
    radius_mm: float,
    depth: int,
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Segments (start, end, radius) of a random branching tree, in normalised coordinates."""
    end = start + direction * length
    segments = [(start, end, radius_mm)]
    if depth == 0:
        return segments
    for _ in range(int(rng.integers(2, 4))):
        turned = direction + rng.normal(0, 0.5, 3)
        turned /= np.linalg.norm(turned)
        segments += _branches(rng, end, turned, length * 0.7, max(radius_mm * 0.7, 0.6), depth - 1)
    return segments


def make_phantom(
    shape: tuple[int, int, int] = (48, 256, 256),
    spacing_mm: tuple[float, float, float] = (0.8, 0.8, 2.5),
    seed: int = 0,
    involvement_pct: tuple[float, float] = (30.0, 10.0),
    subpleural_consolidation: bool = True,
    lungs_touch_anteriorly: bool = False,
    anatomy_variation: float = 0.0,
) -> Phantom:
    """Generate a synthetic chest CT with lungs, vessels, airways, bones and COVID-like lesions.

    Args:
        shape: ``(z, y, x)`` voxels; at least (8, 64, 64).
        spacing_mm: voxel size along x, y, z.
        seed: random seed; the same arguments always give the same phantom.
        involvement_pct: requested infected share of the (right, left) lung volume, 0-100.
        subpleural_consolidation: let consolidation reach the pleura (else it stays central).
        lungs_touch_anteriorly: the lungs meet at the anterior junction line (no gap between
            labels 1 and 2 there), to test left/right separation.
        anatomy_variation: 0 gives the reference anatomy; a fraction (e.g. 0.12) scales chest
            width and depth, each lung's width, lung depth, each diaphragm dome and the heart by
            a seeded random factor within ±that fraction (training data with varied anatomy).

    Returns:
        The Phantom; its ``involvement_pct`` is the achieved figure (within one voxel of the request).
    """
    if len(shape) != 3 or shape[0] < 8 or shape[1] < 64 or shape[2] < 64:
        raise ConfigError(f"phantom shape must be (z, y, x) of at least (8, 64, 64), got {shape}.")
    if any(not 0 <= p <= 100 for p in involvement_pct):
        raise ConfigError(f"involvement_pct must lie in 0..100 for each lung, got {involvement_pct}.")
    if not 0 <= anatomy_variation <= 0.3:
        raise ConfigError(f"anatomy_variation must lie in 0..0.3, got {anatomy_variation}.")
    anatomy = _Anatomy.varied(seed, anatomy_variation)
    rng = np.random.default_rng(seed)
    grid = _Grid(shape, spacing_mm)
    hu = np.full(shape, AIR_HU, dtype=np.float32)

    body = grid.ellipse(0, 0, 0.86 * anatomy.body_u, 0.64 * anatomy.body_v)[0] < 1
    inner = grid.ellipse(0, 0, 0.80 * anatomy.body_u, 0.58 * anatomy.body_v)[0] < 1
    hu[:, body] = FAT_HU
    hu[:, inner] = SOFT_TISSUE_HU
    _paint_bones(hu, grid, anatomy)

    lungs = _lung_labels(grid, lungs_touch_anteriorly, anatomy) * inner[None]
    organ = (
        grid.ellipse(0.12, -0.12, 0.34 * anatomy.heart, 0.30 * anatomy.heart) + ((grid.w - 0.30) / 0.24) ** 2
        < 1
    ) | (grid.ellipse(0.10, 0.34, 0.07, 0.07) < 1)
    lungs[organ] = 0
    hu[lungs > 0] = LUNG_HU

    airway_lumen = np.zeros(shape, dtype=bool)
    carina = np.array([0.0, -0.02, 0.74])
    _paint_tube(airway_lumen, grid, np.array([0.0, -0.05, 1.2]), carina, 8.0, True)
    for side in (-1, 1):
        hilum = np.array([0.30 * side, 0.02, 0.62])
        _paint_tube(airway_lumen, grid, carina, hilum, 5.0, True)
    lungs[airway_lumen] = 0

    _paint_lung_texture(hu, lungs, rng, grid)
    infection, consolidation = _lesions(hu, lungs, rng, grid, involvement_pct, subpleural_consolidation)
    _paint_trees(hu, lungs, rng, grid)
    hu[airway_lumen] = AIR_HU

    hu += rng.standard_normal(shape, dtype=np.float32) * 12.0
    ct_hu = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    geometry = Geometry(
        spacing_mm=tuple(float(s) for s in spacing_mm),  # type: ignore[arg-type]
        origin_mm=tuple(float(-n * s / 2 + s / 2) for n, s in zip(shape[::-1], spacing_mm, strict=True)),  # type: ignore[arg-type]
    )
    metadata = {
        "warnings": [],
        "PatientName": "Synthetic^Phantom",
        "Modality": "CT",
        "SeriesDescription": f"synthetic chest CT seed {seed}",
    }
    ct = CTVolume(ct_hu, geometry, "synthetic phantom", metadata)
    voxel_ml = geometry.voxel_volume_ml
    lung_ml = {label: float((lungs == label).sum()) * voxel_ml for label in (RIGHT_LUNG, LEFT_LUNG)}
    infected_ml = {
        label: float((infection.astype(bool) & (lungs == label)).sum()) * voxel_ml
        for label in (RIGHT_LUNG, LEFT_LUNG)
    }
    involvement = {
        label: 100.0 * infected_ml[label] / lung_ml[label] if lung_ml[label] else 0.0 for label in lung_ml
    }
    return Phantom(ct, lungs, infection, consolidation, lung_ml, infected_ml, involvement)


def _paint_bones(hu: np.ndarray, grid: _Grid, anatomy: _Anatomy) -> None:
    """Ribs (oblique bands in the chest wall), spine and sternum."""
    wall = grid.ellipse(0, 0, 0.80 * anatomy.body_u, 0.58 * anatomy.body_v)
    ring = (wall > 0.80) & (wall < 0.93) & ~((np.abs(grid.u) < 0.18) & (grid.v < 0))
    ribs = ring & (np.sin(2 * np.pi * (grid.w * 7 - 0.6 * grid.v)) > 0.45)
    hu[ribs] = 800.0
    vertebra = grid.ellipse(0, 0.40, 0.12, 0.12)[0]
    hu[:, vertebra < 1] = CORTEX_HU
    hu[:, vertebra < 0.7] = BONE_HU
    hu[:, (grid.ellipse(0, 0.55, 0.045, 0.04)[0] < 1)] = SOFT_TISSUE_HU - 20  # spinal canal
    hu[
        :,
        (np.abs(grid.u[0]) < 0.12)
        & (np.abs(grid.v[0] - 0.58) < 0.05)
        & (grid.ellipse(0, 0.55, 0.05, 0.05)[0] >= 1),
    ] = BONE_HU
    sternum = (grid.ellipse(0, -0.52, 0.09, 0.035) < 1) & (grid.w > 0.3)
    hu[np.broadcast_to(sternum, hu.shape)] = 750.0


def _lung_labels(grid: _Grid, touch_anteriorly: bool, anatomy: _Anatomy) -> np.ndarray:
    """Lung labels from two dome-based, apex-tapered ellipsoids (right one at negative u)."""
    labels = np.zeros(grid.shape, dtype=np.uint8)
    for index, (label, side, half_width, dome_height) in enumerate(
        ((RIGHT_LUNG, -1, 0.31, 0.16), (LEFT_LUNG, 1, 0.28, 0.12))
    ):
        centre = 0.41 * side * anatomy.body_u
        half_width *= anatomy.body_u * anatomy.lung_width[index]
        dome_height *= anatomy.dome[index]
        cross = grid.ellipse(centre, 0.04, half_width, 0.44 * anatomy.body_v * anatomy.lung_depth)
        base = 0.06 + dome_height * np.clip(1 - cross, 0, 1)
        height = np.clip((grid.w - base) / (0.97 - base), 0, 1)
        taper = np.sqrt(np.clip(1 - height**2, 0, 1)) ** 0.7
        inside = (cross < taper**2) & (grid.w > base)
        if touch_anteriorly:
            # anterior lobe reaching the midline above the heart: the anterior junction line
            anterior = (grid.ellipse(0.22 * side, -0.22, 0.32, 0.14) < taper**2) & (grid.w > 0.58)
            inside |= anterior & (np.sign(grid.u + 1e-6) == side)
        labels[inside] = label
    return labels


def _paint_lung_texture(hu: np.ndarray, lungs: np.ndarray, rng: np.random.Generator, grid: _Grid) -> None:
    """Gravity-dependent density gradient and parenchymal texture inside the lungs."""
    nz, ny, nx = grid.shape
    texture = _smooth_field(rng, grid.shape, (max(nz // 4, 2), ny // 16, nx // 16))
    inside = lungs > 0
    hu[inside] = (LUNG_HU + 40.0 * np.broadcast_to(grid.v, grid.shape) + 20.0 * texture)[inside]


def _lesions(
    hu: np.ndarray, lungs: np.ndarray, rng: np.random.Generator, grid: _Grid,
    involvement_pct: tuple[float, float], subpleural: bool,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Infection = top quantile, per lung, of a smooth field biased to periphery and posterior."""
    nz, ny, nx = grid.shape
    field = _smooth_field(rng, grid.shape, (max(nz // 4, 2), ny // 14, nx // 14))
    edge_distance = ndimage.distance_transform_cdt(lungs > 0, metric="taxicab").astype(np.float32)
    peripheral = np.exp(-edge_distance / 6.0)
    field += 1.2 * peripheral + 0.5 * np.broadcast_to(grid.v, grid.shape)
    infection = np.zeros(grid.shape, dtype=np.uint8)
    consolidation = np.zeros(grid.shape, dtype=bool)
    for label, pct in zip((RIGHT_LUNG, LEFT_LUNG), involvement_pct, strict=True):
        inside = lungs == label
        values = field[inside]
        n_infected = int(round(pct / 100 * values.size))
        if n_infected == 0:
            continue
        threshold = np.partition(values, values.size - n_infected)[values.size - n_infected]
        lesion = inside & (field >= threshold)
        core_threshold = np.quantile(field[lesion], 1 - _CONSOLIDATION_FRACTION)
        core = lesion & (field >= core_threshold)
        if not subpleural:
            core &= edge_distance > 3
        infection[lesion] = 1
        consolidation |= core
        severity = np.clip((field - threshold) / max(core_threshold - threshold, 1e-6), 0, 1)
        ggo = lesion & ~core
        hu[ggo] = (GGO_HU[0] + (GGO_HU[1] - GGO_HU[0]) * severity)[ggo]
        core_severity = np.clip((field - core_threshold) / 1.0, 0, 1)
        hu[core] = (CONSOLIDATION_HU[0] + (CONSOLIDATION_HU[1] - CONSOLIDATION_HU[0]) * core_severity)[core]
    return infection, consolidation


def _paint_trees(hu: np.ndarray, lungs: np.ndarray, rng: np.random.Generator, grid: _Grid) -> None:
    """Pulmonary vessels (blood, 40 HU) and segmental airways (air lumen) branching from each hilum."""
    inside = lungs > 0
    for side in (-1, 1):
        hilum = np.array([0.28 * side, 0.02, 0.60])
        for direction in (
            [0.5 * side, 0.0, 0.6],
            [0.6 * side, 0.3, -0.5],
            [0.5 * side, -0.5, 0.0],
            [0.3 * side, 0.6, 0.2],
        ):
            unit = np.array(direction) / np.linalg.norm(direction)
            for start, end, radius in _branches(rng, hilum, unit, 0.22, 3.5, 3):
                _paint_tube(hu, grid, start, end, radius, SOFT_TISSUE_HU, where=inside)
        for direction in ([0.4 * side, 0.1, 0.5], [0.5 * side, 0.2, -0.5]):
            unit = np.array(direction) / np.linalg.norm(direction)
            for start, end, radius in _branches(rng, hilum, unit, 0.18, 2.5, 1):
                _paint_tube(hu, grid, start, end, radius, AIR_HU, where=inside)


def sample_ct(seed: int = 0) -> Phantom:
    """The phantom shown as napari sample data: 64 x 256 x 256 voxels, 30 % right / 10 % left involvement."""
    return make_phantom(shape=(64, 256, 256), seed=seed)
