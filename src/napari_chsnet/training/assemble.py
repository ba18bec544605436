"""Put a CHS-Net cascade together from two runs: the lung stage of one, the infection stage of another.

The two stages train separately (CHS-Net Sec. 4: the infection stage reads lung contour maps made
from lung masks, not from the lung network's output), so a lung stage retrained later can join an
infection stage trained in parallel. Both runs must have the same network settings.
"""

from __future__ import annotations

import os
from typing import Any

from napari_chsnet.errors import WeightsError
from napari_chsnet.training.checkpoints import load_checkpoint, save_checkpoint


def assemble_chsnet(
    lungs_from: str | os.PathLike, infection_from: str | os.PathLike, output: str | os.PathLike,
    overwrite: bool = False,
) -> str:  # fmt: skip
    """Write ``output`` with ``lungs_from``'s lung RAIU-Net and ``infection_from``'s infection one.

    Returns the new file's sha256. The metadata keeps each stage's own preprocessing size,
    training record and metrics.
    """
    lungs = load_checkpoint(lungs_from, expected_model="chsnet")
    infection = load_checkpoint(infection_from, expected_model="chsnet")
    if lungs.config != infection.config:
        raise WeightsError(
            f"the two CHS-Net runs have different network settings ({lungs.config} vs {infection.config}); "
            "their stages cannot be combined"
        )
    network = infection.build()
    network.lung_net.load_state_dict(lungs.build().lung_net.state_dict())
    lung_pre, infection_pre = (
        lungs.metadata.get("preprocessing", {}),
        infection.metadata.get("preprocessing", {}),
    )
    metadata: dict[str, Any] = {
        **infection.metadata,
        "role": "cascade",
        "preprocessing": {
            **infection_pre,
            "lung_input_size": lung_pre.get("lung_input_size", infection_pre.get("lung_input_size")),
        },
        "training": {
            "lungs": lungs.metadata.get("training", {}),
            "infection": infection.metadata.get("training", {}),
        },
        "metrics": {
            "lungs": lungs.metadata.get("metrics", {}),
            "infection": infection.metadata.get("metrics", {}),
        },
        "assembled_from": {"lungs": str(lungs_from), "infection": str(infection_from)},
    }
    return save_checkpoint(
        output, network, "chsnet", metadata=metadata, half_precision=True, overwrite=overwrite
    )
