"""Estimate the HU window that maps real CT onto the 8-bit COVID-SemiSeg slices.

Matches two tissue peaks: aerated lung parenchyma and soft tissue (muscle/heart/blood).
Prints the peaks found in each domain and the resulting window (used as
napari_chsnet.inference.intensity.DISPLAY_WINDOW_HU; see docs/intensity.md).

    python scripts/estimate_intensity_window.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage as ndi


def smoothed_peak(hist: np.ndarray, lo: int, hi: int) -> int:
    smooth = np.convolve(hist.astype(float), np.ones(9) / 9, mode="same")
    return lo + int(np.argmax(smooth[lo:hi]))


def hu_peaks(path: Path) -> tuple[float, float]:
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.int32)
    body = np.zeros(hu.shape, bool)
    for z in range(hu.shape[0]):
        body[z] = ndi.binary_fill_holes(hu[z] > -500)
    values = np.clip(hu[body], -1100, 400) + 1100
    hist = np.bincount(values.ravel(), minlength=1501)
    lung = smoothed_peak(hist, -950 + 1100, -700 + 1100) - 1100
    soft = smoothed_peak(hist, 0 + 1100, 100 + 1100) - 1100
    return float(lung), float(soft)


def display_peaks(folder: Path) -> tuple[float, float]:
    lungs, softs = [], []
    for image_path in sorted(folder.glob("*.jpg")):
        values = np.asarray(Image.open(image_path).convert("L"))
        hist = np.bincount(values.ravel(), minlength=256)
        lungs.append(smoothed_peak(hist, 5, 120))
        softs.append(smoothed_peak(hist, 150, 250))
    return float(np.median(lungs)), float(np.median(softs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    hu_lung, hu_soft = np.mean(
        [hu_peaks(p) for p in sorted((args.data / "covid-ct-md").glob("*_ct_hu.nii.gz"))], axis=0
    )
    v_lung, v_soft = display_peaks(args.data / "covid-semiseg" / "train" / "images")
    slope = (v_soft - v_lung) / (hu_soft - hu_lung)  # 8-bit units per HU
    low = hu_lung - v_lung / slope
    high = low + 255.0 / slope
    print(f"HU peaks: lung {hu_lung:.0f}, soft tissue {hu_soft:.0f}")
    print(f"8-bit peaks (median over slices): lung {v_lung:.0f}, soft tissue {v_soft:.0f}")
    print(f"window: [{low:.0f}, {high:.0f}] HU (centre {(low + high) / 2:.0f}, width {high - low:.0f})")


if __name__ == "__main__":
    main()
