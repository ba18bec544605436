"""Average checkpoints of one network into a new one (a uniform "model soup", Wortsman et al. 2022).

For continuations of the same parent weights (e.g. EAMC rounds 10 and 11, which both continued
round 9 member by member): see ``napari_chsnet.models.checkpoints.average_checkpoints``. The
result keeps the first checkpoint's metadata (preprocessing, recipe) and records its ingredients
(path, sha256, their own validation metrics) under ``averaged_from``.
An existing output is never overwritten.

    python scripts/average_weights.py A.safetensors B.safetensors [C.safetensors ...] -o OUT.safetensors
"""

from __future__ import annotations

import argparse
import sys

from napari_chsnet.errors import OutputExistsError, WeightsError
from napari_chsnet.models.checkpoints import average_checkpoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="two or more .safetensors of the same network")
    parser.add_argument("-o", "--output", required=True, help="the averaged checkpoint to write")
    parser.add_argument(
        "--full-precision", action="store_true", help="store float32 (default fp16, as the bundled weights)"
    )
    args = parser.parse_args(argv)
    try:
        averaged = average_checkpoints(args.checkpoints)
        sha = averaged.save(args.output, half_precision=not args.full_precision)
    except (WeightsError, OutputExistsError) as exc:
        print(f"average_weights: {exc}", file=sys.stderr)
        return 2
    print(f"{args.output}: average of {len(args.checkpoints)} '{averaged.model}' checkpoints, sha256 {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
