"""Parameters and CPU forward time per 256 x 256 slice of each network at its paper configuration.

    python benchmarks/bench_models.py [--threads 2] [--repeats 5] [--batch 1] [--size 256] [--channels-last]
                                      [--bfloat16]

``--channels-last`` stores the weights channels-last, as ``inference.weights.network_for`` does on the CPU.
``--bfloat16`` runs the passes under bfloat16 autocast, as the pipeline does on a CPU with AMX
(``inference.device``; the header says whether this CPU has it: without, bfloat16 is emulated and slower).

Times are medians over ``--repeats`` forward passes under ``torch.inference_mode`` after one warm-up pass,
divided by the batch size. On a shared machine, compare with ``uptime``: OpenMP threads that lose their core
to another process make every operation wait, and the figures balloon.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from napari_chsnet.inference.device import cpu_has_bf16_matrix_units
from napari_chsnet.models import build_model

MODEL_KEYS = ("raiunet", "chsnet", "amcnet", "eamc", "rdunet")


def time_forward_ms(
    model: torch.nn.Module, batch: torch.Tensor, repeats: int, bfloat16: bool = False
) -> float:
    """Median wall time of one forward pass, in milliseconds per slice."""
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if bfloat16 else contextlib.nullcontext()
    with torch.inference_mode(), precision:
        model(batch)
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(batch)
            timings.append(time.perf_counter() - start)
    return 1000 * statistics.median(timings) / batch.shape[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes per model")
    parser.add_argument("--batch", type=int, default=1, help="slices per forward pass")
    parser.add_argument("--size", type=int, default=256, help="slice height and width (a multiple of 16)")
    parser.add_argument("--models", nargs="+", default=list(MODEL_KEYS), choices=MODEL_KEYS)
    parser.add_argument(
        "--channels-last", action="store_true", help="channels-last weights (the CPU pipeline's)"
    )
    parser.add_argument(
        "--bfloat16", action="store_true", help="bfloat16 autocast (the pipeline's on AMX CPUs)"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = torch.rand(args.batch, 1, args.size, args.size)
    layout = "channels-last" if args.channels_last else "contiguous"
    precision = "bfloat16 autocast" if args.bfloat16 else "float32"
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.size}x{args.size}, "
        f"{layout} weights, {precision} (AMX: {'yes' if cpu_has_bf16_matrix_units() else 'no'})"
    )
    print(f"{'model':<10}{'parameters':>14}{'ms/slice':>12}")
    for key in args.models:
        model = build_model(key).eval()
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        n_parameters = sum(p.numel() for p in model.parameters())
        milliseconds = time_forward_ms(model, batch, args.repeats, args.bfloat16)
        print(f"{key:<10}{n_parameters / 1e6:>13.2f}M{milliseconds:>12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
