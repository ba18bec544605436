"""Combine the lung stage of one CHS-Net run with the infection stage of another (bundled weights).

    python scripts/assemble_chsnet.py --lungs runs/chsnet_lungs_anatomy/chsnet.safetensors \
        --infection runs/chsnet_final/chsnet.safetensors -o resources/weights/chsnet.safetensors --overwrite
"""

from __future__ import annotations

import argparse
import sys

from napari_chsnet.errors import CHSNetError
from napari_chsnet.training.assemble import assemble_chsnet


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lungs", required=True, help="CHS-Net checkpoint whose lung stage is taken")
    parser.add_argument(
        "--infection", required=True, help="CHS-Net checkpoint whose infection stage is taken"
    )
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    try:
        sha = assemble_chsnet(args.lungs, args.infection, args.output, overwrite=args.overwrite)
    except CHSNetError as exc:
        print(f"assemble_chsnet: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
