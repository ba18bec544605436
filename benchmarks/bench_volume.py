"""Seconds and peak memory of whole-volume segmentation per model, against lungmask's R231 pipeline.

Usage (from the repository root, in the project's environment; lungmask comes with the ``benchmark``
extra: ``pip install -e ".[benchmark]"``)::

    python benchmarks/bench_volume.py                      # 512 x 512 x 150 phantom, 2 threads, all models
    python benchmarks/bench_volume.py --slices 40 --models chsnet rdunet
    python benchmarks/bench_volume.py --no-mirror-averaging  # one pass per slice (default: each model's)

Our networks get random-initialised *paper-size* weights (the timing does not depend on the values) with
the default preprocessing (lung stage 256, infection stage 256, EAMC 512 -> 16 patches of 128);
lungmask's ``LMInferer`` gets a random state dict of its R231 U-Net as ``modelpath`` (no download).
Each run is a fresh child process, so its peak resident memory (``ru_maxrss``) is its own; the figure
"added" is the peak minus the process's memory just before the run (interpreter, torch, the CT).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS = ("chsnet", "eamc", "rdunet")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def _current_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def _write_paper_weights(folder: Path) -> None:
    import torch

    from napari_chsnet.inference.intensity import DISPLAY_WINDOW_HU
    from napari_chsnet.inference.preprocessing import EAMC_SLICE_SIZE, INFECTION_INPUT_SIZE, LUNG_INPUT_SIZE
    from napari_chsnet.models.checkpoints import save_checkpoint
    from napari_chsnet.models.factory import build_model

    torch.manual_seed(0)
    for model in MODELS:
        infection_size = EAMC_SLICE_SIZE if model == "eamc" else INFECTION_INPUT_SIZE
        preprocessing = {
            "window_hu": list(DISPLAY_WINDOW_HU), "lung_input_size": LUNG_INPUT_SIZE,
            "infection_input_size": infection_size, "crop": "lungs",
        }  # fmt: skip
        save_checkpoint(folder / f"{model}.safetensors", build_model(model), model,
                        metadata={"preprocessing": preprocessing}, overwrite=True)  # fmt: skip


def _run_ours(
    model: str, ct_path: str, weights: str, threads: int, batch_size: int, mirror: bool | None, queue
) -> None:
    import torch

    torch.set_num_threads(threads)
    from napari_chsnet.inference.pipeline import SegmentationSettings
    from napari_chsnet.io.volume import CTVolume, Geometry
    from napari_chsnet.report.case import segment_case

    hu = np.load(ct_path)
    volume = CTVolume(hu, Geometry((0.7, 0.7, 2.0)), "benchmark phantom")
    before = _current_mb()
    started = time.perf_counter()
    result = segment_case(
        volume,
        SegmentationSettings(
            model=model, device="cpu", weights=weights, batch_size=batch_size, mirror_averaging=mirror
        ),
    )
    seconds = time.perf_counter() - started
    queue.put({"seconds": seconds, "peak_mb": _peak_mb(), "added_mb": _peak_mb() - before,
               "stages": result.timings_s, "lung_ml": result.severity.overall_volume_ml,
               "mirror": result.run_info.inference_options["mirror_averaging"]})  # fmt: skip


def _run_lungmask(ct_path: str, state_path: str, threads: int, queue) -> None:
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(threads)
    from lungmask.mask import LMInferer

    image = sitk.GetImageFromArray(np.load(ct_path))
    image.SetSpacing((0.7, 0.7, 2.0))
    before = _current_mb()
    started = time.perf_counter()
    inferer = LMInferer(modelname="R231", modelpath=state_path, force_cpu=True, tqdm_disable=True)
    inferer.apply(image)
    seconds = time.perf_counter() - started
    queue.put({"seconds": seconds, "peak_mb": _peak_mb(), "added_mb": _peak_mb() - before})


def _in_child(target, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=150)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--skip-lungmask", action="store_true")
    parser.add_argument(
        "--mirror-averaging", action=argparse.BooleanOptionalAction, default=None,
        help="as chsnet segment (default: each model's own; it doubles the infection stage)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    from napari_chsnet.io.phantom import make_phantom

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        started = time.perf_counter()
        phantom = make_phantom(shape=(args.slices, args.size, args.size), spacing_mm=(0.7, 0.7, 2.0))
        ct_path = folder / "ct.npy"
        np.save(ct_path, phantom.ct.hu)
        print(f"phantom {args.size}x{args.size}x{args.slices} made in {time.perf_counter() - started:.0f} s; "
              f"{args.threads} threads, batch {args.batch_size}", flush=True)  # fmt: skip
        _write_paper_weights(folder)

        theirs = None
        if not args.skip_lungmask:
            try:
                import torch
                from lungmask.resunet import UNet
            except ImportError:
                print(
                    "lungmask is not installed (pip install -e '.[benchmark]'); no reference run", flush=True
                )
            else:
                torch.manual_seed(0)
                state = UNet(
                    n_classes=3, padding=True, depth=5, up_mode="upsample", batch_norm=True, residual=False
                )
                torch.save(state.state_dict(), folder / "r231_random.pth")
                theirs = _in_child(_run_lungmask, str(ct_path), str(folder / "r231_random.pth"), args.threads)
                print(f"lungmask R231   {theirs['seconds']:7.1f} s  peak {theirs['peak_mb']:6.0f} MB "
                      f"(+{theirs['added_mb']:.0f} MB)", flush=True)  # fmt: skip

        for model in args.models:
            ours = _in_child(
                _run_ours,
                model,
                str(ct_path),
                str(folder),
                args.threads,
                args.batch_size,
                args.mirror_averaging,
            )
            ratio = f"  ours/theirs {ours['seconds'] / theirs['seconds']:.2f}" if theirs else ""
            stages = ", ".join(f"{k} {v:.1f}" for k, v in ours["stages"].items())
            print(f"{model:<15} {ours['seconds']:7.1f} s  peak {ours['peak_mb']:6.0f} MB "
                  f"(+{ours['added_mb']:.0f} MB){ratio}\n{'':<16}stages (s): {stages}; mirror averaging "
                  f"{'on' if ours['mirror'] else 'off'}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
