"""Every tooltip of the CHS-Net panel, in one table (keys are the controls' names)."""

from __future__ import annotations

TOOLTIPS: dict[str, str] = {
    # Segment
    "ct": "The chest CT to segment: an image layer in Hounsfield units (open DICOM, NIfTI, MHA or NRRD "
    "with File → Open; try File → Open Sample → CHS-Net Segment → Synthetic chest CT).",
    "model": "CHS-Net: two cascaded RAIU-Nets (lungs, then infection). EAMC: ensemble of attention "
    "multi-scale nets with majority voting. Residual Dilated U-Net: residual SE blocks with dilated skips.",
    "device": "Where the network runs. 'auto' picks a GPU when one is present (an Apple GPU with torch 2.3 or later), else the CPU. "
    "Only the devices found on this computer are listed. An NVIDIA GPU computes in float16 (an Apple GPU too, "
    "with torch 2.5 or later), a CPU with AMX in bfloat16 (about twice as fast; set CHSNET_CPU_BF16=0 before "
    "starting napari for float32), other CPUs in float32.",
    "weights": "Network weights: 'bundled' are the weights shipped with the plugin; choose a folder of "
    "fine-tuned weights (chsnet/eamc/rdunet .safetensors) or a single .safetensors file.",
    "weights_folder": "Use the weights in a folder (as written by fine-tuning or `chsnet finetune`); it "
    "must hold the chosen model's .safetensors (only a missing chsnet.safetensors, the lung stage, is taken "
    "from the bundled set).",
    "weights_file": "Use one .safetensors checkpoint file.",
    "threshold": "Probability from which a voxel counts as infection (0.5 = the papers' setting). EAMC: each "
    "member's vote threshold; the mask is the members' majority vote and the probability map their mean.",
    "min_lesion_ml": "Infection islands smaller than this volume (mL) are ignored by the severity "
    "figures (0.1 mL ≈ a 6 mm nodule; 0 counts every voxel).",
    "mirror_averaging": "The infection network also reads every slice mirrored left-right and the two "
    "probabilities are averaged: slightly better masks for twice the infection stage's time. Choosing a "
    "model sets its default (on for all three; off, EAMC takes less than half the time on a CPU).",
    "overlapping_tiles": "EAMC only: its members read 128 x 128 tiles every 64 pixels and average them, "
    "instead of the paper's 16 side-by-side patches, so no pixel inside the crop is judged only at a "
    "patch border; three times EAMC's time, for a tie on the held-out slices (EAMC's model card).",
    "batch_size": "Slices per network call; lower it if the GPU runs out of memory.",
    "segment": "Segment lungs and infection of the chosen CT (Shift+S in the canvas). napari stays usable "
    "while it runs; the result appears as the 'lungs', 'infection' and 'infection probability' layers.",
    "cancel": "Stop the running segmentation; no layer is added or changed.",
    # Correct
    "restrict": "Delete infection outside both lungs (one undo step: Ctrl+Z).",
    "islands_target": "The mask whose small islands are removed or holes filled.",
    "islands_ml": "Connected islands (3-D, 26-connected) smaller than this volume are removed.",
    "remove_islands": "Remove islands smaller than the given volume from the chosen mask (one undo step).",
    "fill_holes": "Fill holes slice by slice in the chosen mask, e.g. vessels left out of a lung "
    "(one undo step).",
    "relabel_right": "Relabel the lung component under the mouse cursor as the patient's RIGHT lung "
    "(Shift+R with the cursor on it; one undo step).",
    "relabel_left": "Relabel the lung component under the mouse cursor as the patient's LEFT lung "
    "(Shift+L with the cursor on it; one undo step).",
    # Report
    "severity_table": "Per-lung volume, infected volume, involvement and MosMed grade (CT-0 … CT-4; "
    "'not measured' for a lung mask under 100 mL), recomputed from the current 'lungs' and 'infection' "
    "layers after every edit.",
    "anonymize": "Leave names, IDs, UIDs, dates, descriptions, the institution and the input path out of the exported report; sex, age and scanner fields stay, and so does the case name (the file or folder name) unless it holds the patient's name or ID: then a code replaces it and the report says so.",
    "export_pdf": "Write the two-page PDF report (figures, key slices, run details).",
    "export_csv": "Append one row for this case to a CSV file (a new file gets a header).",
    "export_json": "Write the machine-readable report.json.",
    "mask_format": "File format of the exported masks.",
    "export_masks": "Write lungs, infection and probability in the CT's original geometry "
    "(orientation, spacing, origin) into a folder.",
}
