"""How well ``chsnet evaluate --rotate auto`` finds the turn of real slices (inference/orientation.py).

Reads every real slice of the shared data under the four quarter-turn hypotheses with the bundled
lung stage: COVID-SemiSeg's 50 labelled and 1600 unlabelled slices (all turned 90°; the unlabelled
ones grouped by source volume, from their file names) and the lung crops of every 3rd slice of
covid-ct-md's P001 and normal001 (8-bit through the shared window, stored in each of the four turns).
Prints the single-slice accuracy per source, the choice for each whole folder (a case in one turn)
and, for random one-case folders of n slices, how often the choice is wrong and how many of the
wrong choices are flagged as doubtful. About 13 minutes on 2 CPU threads.

    python scripts/check_orientation.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_chsnet.inference.device import resolve_device
from napari_chsnet.inference.intensity import hu_to_unit, unit_to_display8
from napari_chsnet.inference.orientation import ROTATIONS, choose_rotation, rotation_certainties
from napari_chsnet.inference.pipeline import SegmentationSettings, build_stages
from napari_chsnet.inference.preprocessing import lung_crop_box
from napari_chsnet.io.readers import read_ct
from napari_chsnet.training.datasets import read_gray_image
from napari_chsnet.training.lung_labels import air_in_body_slice

FOLDER_SIZES = (1, 2, 3, 5, 10, 20)
DRAWS_PER_FOLDER = 300


def semiseg_rows(data: Path, lung_stage):
    for path in sorted((data / "covid-semiseg/train/images").glob("*.jpg")):
        yield "labelled", 90, rotation_certainties(read_gray_image(path), lung_stage)
    for path in sorted((data / "covid-semiseg/unlabelled/images").glob("*.jpg")):
        case = path.stem.rsplit("_", 1)[0].removeprefix("Data-1_")
        yield case, 90, rotation_certainties(read_gray_image(path), lung_stage)


def volume_rows(data: Path, lung_stage):
    """Lung crops of every 3rd slice with lungs; one probe per crop, turned by index arithmetic: the
    certainty of hypothesis h on a crop stored turned by t is that of (h - t) on the upright crop."""
    for case in ("P001", "normal001"):
        hu = read_ct(data / f"covid-ct-md/{case}_ct_hu.nii.gz").hu
        for z in range(0, hu.shape[0], 3):
            air = air_in_body_slice(hu[z].astype(np.float32), pixel_area_mm2=0.49)
            if air.sum() < 2000:  # slices with hardly any lung (apex, abdomen)
                continue
            box = lung_crop_box(air[None])
            crop = unit_to_display8(hu_to_unit(hu[z, box.y0 : box.y1, box.x0 : box.x1]))
            upright_scores = rotation_certainties(crop, lung_stage)
            for turn in range(4):
                yield (
                    f"{case} turned {ROTATIONS[turn]}",
                    ROTATIONS[turn],
                    np.roll(upright_scores, turn).tolist(),
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    lung_stage, _, _ = build_stages(SegmentationSettings(model="chsnet", device="cpu"), resolve_device("cpu"))
    rows = [*semiseg_rows(args.data, lung_stage), *volume_rows(args.data, lung_stage)]
    folders: dict[str, tuple[int, list[list[float]]]] = {}
    for folder, turn, scores in rows:
        folders.setdefault(folder, (turn, []))[1].append(scores)

    print("whole folders: folder, slices, true turn, single-slice accuracy, choice")
    for folder, (turn, scores) in folders.items():
        table = np.asarray(scores)
        single = np.mean(np.asarray(ROTATIONS)[table.argmax(axis=1)] == turn)
        choice = choose_rotation(table)
        print(f"  {folder:48s} {len(table):4d} {turn:3d}  {single:.2f}  {choice.describe()}")

    rng = np.random.default_rng(0)
    print(
        f"random one-case folders ({DRAWS_PER_FOLDER} draws per folder): n, wrong, flagged, wrong ones flagged"
    )
    for size in FOLDER_SIZES:
        wrong, flagged = [], []
        for turn, scores in folders.values():
            table = np.asarray(scores)
            if len(table) < size:
                continue
            for _ in range(DRAWS_PER_FOLDER):
                choice = choose_rotation(table[rng.choice(len(table), size, replace=False)])
                wrong.append(choice.rotation != turn)
                flagged.append(choice.doubtful)
        wrong, flagged = np.asarray(wrong), np.asarray(flagged)
        caught = flagged[wrong].mean() if wrong.any() else float("nan")
        print(f"  n={size:2d}  {wrong.mean():.4f}  {flagged.mean():.3f}  {caught:.2f}")


if __name__ == "__main__":
    main()
