"""End-to-end check of the bundled weights on the two real covid-ct-md volumes.

Segments P001 (COVID-19) and normal001 with one model and prints: P001's slice-level sensitivity
and specificity against the radiologists' per-slice infection labels, P001's per-lung
distribution against the lobe labels, and normal001's involvement and grade. Saves axial and
coronal overlay pictures for the model cards.

    python scripts/check_covid_ct_md.py --model chsnet [--data ../shared/data] [--pictures docs/e2e] [--[no-]mirror-averaging]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_chsnet.inference.pipeline import SegmentationSettings
from napari_chsnet.io.readers import read_ct
from napari_chsnet.report.case import segment_case

# A slice counts as "infected" by the model when it holds at least this much infection.
MIN_SLICE_INFECTION_ML = 0.05


def overlay_png(path: Path, hu: np.ndarray, lungs: np.ndarray, infection: np.ndarray, aspect: float) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 5 / max(aspect, 1e-3) if aspect < 1 else 5), dpi=100)
    axes = figure.add_axes([0, 0, 1, 1])
    axes.imshow(np.clip((hu + 1350) / 1500, 0, 1), cmap="gray", aspect=aspect, interpolation="bilinear")
    for label, color in ((1, "#3399ff"), (2, "#33dd55")):
        axes.contour(lungs == label, levels=[0.5], colors=[color], linewidths=0.8)
    red = np.zeros((*infection.shape, 4))
    red[infection > 0] = (1.0, 0.1, 0.1, 0.55)
    axes.imshow(red, aspect=aspect, interpolation="nearest")
    axes.text(5, 20, "R", color="yellow", fontsize=14)
    axes.text(hu.shape[1] - 20, 20, "L", color="yellow", fontsize=14)
    axes.set_axis_off()
    figure.savefig(path)


def save_overlays(stem: Path, volume, result, per_slice_ml: np.ndarray) -> None:
    """``<stem>_axial.png`` at the most infected slice and ``<stem>_coronal.png`` through the lungs' centre."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    z = int(np.argmax(per_slice_ml)) if per_slice_ml.max() > 0 else volume.shape[0] // 2
    spacing = volume.geometry.spacing_zyx
    overlay_png(
        stem.with_name(f"{stem.name}_axial.png"), volume.hu[z], result.lungs[z], result.infection[z], 1.0
    )
    y = (
        int(np.nonzero(result.lungs.any(axis=(0, 2)))[0].mean())
        if result.lungs.any()
        else volume.shape[1] // 2
    )
    overlay_png(
        stem.with_name(f"{stem.name}_coronal.png"),
        volume.hu[::-1, y],
        result.lungs[::-1, y],
        result.infection[::-1, y],
        spacing[0] / spacing[2],
    )


def covid_ct_md_figures(
    folder: Path, settings: SegmentationSettings, pictures: Path | None = None
) -> dict[str, dict]:
    """The model card's figures on ``folder`` (covid-ct-md): per case its severity and run time, for P001
    also the slice-level confusion counts against the radiologists' labels and the right lung's share
    of the infected volume. With ``pictures``, saves the axial and coronal overlays there."""
    figures = {}
    for case in ("P001", "normal001"):
        volume = read_ct(folder / f"{case}_ct_hu.nii.gz")
        result = segment_case(volume, settings)
        severity = result.severity.to_dict()
        voxel_ml = volume.geometry.voxel_volume_ml
        per_slice_ml = result.infection.reshape(result.infection.shape[0], -1).sum(1) * voxel_ml
        predicted = per_slice_ml >= MIN_SLICE_INFECTION_ML
        entry = {"severity": severity, "runtime_s": round(result.run_info.runtime_s, 1)}
        if case == "P001":
            # display orientation is LPS with slice 0 most inferior, as the labels' k (axis codes L,P,S)
            truth = np.load(folder / "P001_slice_labels_updated1_knifti.npy").astype(bool)
            lobes = np.load(folder / "P001_lobe_labels_updated1_knifti.npy").astype(
                bool
            )  # LLL LUL RLL RML RUL
            tp, fn = int((predicted & truth).sum()), int((~predicted & truth).sum())
            tn, fp = int((~predicted & ~truth).sum()), int((predicted & ~truth).sum())
            right_truth, left_truth = lobes[:, 2:].any(1), lobes[:, :2].any(1)
            right_ml = float((result.infection & (result.lungs == 1)).sum() * voxel_ml)
            left_ml = float((result.infection & (result.lungs == 2)).sum() * voxel_ml)
            entry.update(
                slice_sensitivity=round(tp / max(tp + fn, 1), 3),
                slice_specificity=round(tn / max(tn + fp, 1), 3),
                slices={"tp": tp, "fn": fn, "tn": tn, "fp": fp},
                right_share_of_infected_ml=round(right_ml / max(right_ml + left_ml, 1e-9), 3),
                lobe_label_slices={"right": int(right_truth.sum()), "left": int(left_truth.sum())},
            )
        figures[case] = entry
        if pictures:
            save_overlays(pictures / f"{settings.model}_{case}", volume, result, per_slice_ml)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="chsnet")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--pictures", type=Path, default=None)
    parser.add_argument(
        "--mirror-averaging", action=argparse.BooleanOptionalAction, default=None,
        help="average each slice with its mirror (default: the model's own setting)",
    )  # fmt: skip
    parser.add_argument(
        "--overlapping-tiles", action=argparse.BooleanOptionalAction, default=None,
        help="EAMC: read overlapping tiles (default: the model's own setting)",
    )  # fmt: skip
    args = parser.parse_args()
    settings = SegmentationSettings(
        model=args.model, weights=args.weights, mirror_averaging=args.mirror_averaging,
        overlapping_tiles=args.overlapping_tiles,
    )  # fmt: skip
    figures = covid_ct_md_figures(args.data / "covid-ct-md", settings, pictures=args.pictures)
    print(json.dumps({"model": args.model, **figures}, indent=2))


if __name__ == "__main__":
    main()
