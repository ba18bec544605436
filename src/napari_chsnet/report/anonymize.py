"""What an anonymised report may not carry beyond the study fields it drops (``IDENTIFYING_FIELDS``):
the patient's name or ID in the case name, and identifying text in warnings and error messages.

Warnings are written for the reader of a report, so they quote what helps a user who may see the
patient: the series a folder held, by description and study date; the PatientIDs of a folder of
several patients. An anonymised report keeps each warning but without those details.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REMOVED = "[removed]"
# DICOM UIDs: dotted digit groups (1.2.826.0.1.3680043...).
_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")
# Dates as DICOM stores them (YYYYMMDD) and as reports print them (YYYY-MM-DD), with a real month and
# day: other 8-digit numbers (a voxel count) stay.
_DATES = re.compile(r"\b(?:19|20)\d{2}(-?)(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12]\d|3[01])\b")
# A series named with its description: series 3 "Thorax 1.0 B70f" (its details follow in brackets).
_SERIES_DESCRIPTION = re.compile(r'(series \S+) ".*?" \(')
_PATIENT_IDS = re.compile(r"(PatientIDs?) [^);]*")
# Name components (DICOM PN: family^given^middle, "=" between alphabets) and the words in them.
_NAME_COMPONENTS = re.compile(r"[\^=\s,]+")
_WORDS = re.compile(r"[\W_\d]+")
# A case name's words with their apostrophes (and, second reading, hyphens) taken out, to meet the
# PatientName's joined components whatever else separates the words: O'Brien-CT gives "obrien" (for
# OBRIEN^PAT), Smith-Jones_chest "smithjones" (for SMITHJONES^ANN).
_JOINED = [
    (re.compile(r"(?:[^\w'’]|[_\d])+"), re.compile(r"['’]")),
    (re.compile(r"(?:[^\w'’-]|[_\d])+"), re.compile(r"['’-]")),
]


def anonymous_case_name(case: str, identity: Mapping[str, Any]) -> tuple[str, str | None]:
    """The case name an anonymised report may show, and a warning when it had to be replaced.

    A case name (the input's folder or file name, e.g. ``DOE^JANE_12345``) that holds the PatientID,
    or a whole word of the PatientName (``WU_LI`` for ``Wu^Li``; not ``planning`` for ``Ann``), of
    the scan's own study fields (``identity``) becomes ``case-`` and 12 hex digits of a hash keyed
    with the series' UID, which the report leaves out: the same scan gets the same name in every
    run, and a guessed name cannot be hashed to match it.
    """
    folded = case.casefold()
    words = {word for word in _WORDS.split(folded) if word}
    words |= {joiner.sub("", part) for parts, joiner in _JOINED for part in parts.split(folded)}
    patient_id = str(identity.get("PatientID", "")).casefold()
    if not (words & _name_words(identity) or (len(patient_id) >= 3 and patient_id in folded)):
        return case, None
    key = "|".join(str(identity.get(k, "")) for k in ("SeriesInstanceUID", "StudyInstanceUID", "PatientID"))
    replaced = _keyed_name(case, key)
    return replaced, (
        f"The case name (the input's file or folder name) holds the patient's name or ID, so the anonymised "
        f"report calls the case {replaced}; rename the input to choose the name (the output folder keeps it)."
    )


def _name_words(identity: Mapping[str, Any]) -> set[str]:
    """The words of the PatientName (two letters or more), each component also with its hyphens and
    apostrophes taken out (O'Brien: "o", "brien" and "obrien"; Smith-Jones: also "smithjones")."""
    words: set[str] = set()
    for component in _NAME_COMPONENTS.split(str(identity.get("PatientName", "")).casefold()):
        words |= {w for w in _WORDS.split(component) if w}
        words.add("".join(_WORDS.split(component)))
    return {w for w in words if len(w) >= 2}


def _keyed_name(case: str, key: str) -> str:
    # blake2b takes keys of at most 64 bytes: the key is hashed to that length, not cut (a series UID or
    # a resolved path alone can exceed it, which left the rest of the key out)
    full_key = hashlib.blake2b(key.encode(), digest_size=64).digest()
    return "case-" + hashlib.blake2b(case.encode(), key=full_key, digest_size=6).hexdigest()


def anonymous_input_name(case: str, source: Path) -> str:
    """The name an anonymised batch gives a case that could not be read (its patient fields unknown,
    so its name cannot be checked): ``case-`` and a hash keyed with the input's resolved path and
    inode, which no report shows. Not its modification time: the input fixed in place and run again
    keeps the name, so its row gives way to the case's row."""
    resolved = source.resolve()
    try:
        key = f"{resolved}|{source.stat().st_ino}"
    except OSError:
        key = str(resolved)
    return _keyed_name(case, key)


def scrub_identifiers(text: str, identifying_values: Iterable[str] = ()) -> str:
    """``text`` without UIDs, dates, series descriptions, PatientID lists and the given values (the
    scan's identifying study fields, the input's path) where they stand as whole words, in any case:
    for warnings and errors of an anonymised report."""
    for value in sorted({str(v) for v in identifying_values if len(str(v)) >= 2}, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", REMOVED, text, flags=re.IGNORECASE)
    text = _SERIES_DESCRIPTION.sub(r"\1 (", text)
    text = _PATIENT_IDS.sub(rf"\1 {REMOVED}", text)
    text = _UID.sub(REMOVED, text)
    return _DATES.sub(REMOVED, text)


def identifying_values(identity: Mapping[str, Any], fields: Iterable[str]) -> list[str]:
    """The values of the identifying ``fields`` present in ``identity``, with the parts of a DICOM
    person name (``DOE^JANE``: ``DOE JANE``, ``DOE``, ``JANE``) as a warning may quote them."""
    values: list[str] = []
    for field in fields:
        value = str(identity.get(field) or "")
        if not value:
            continue
        values.append(value)
        if field == "PatientName":
            parts = [p for p in _NAME_COMPONENTS.split(value) if p]
            values += [" ".join(parts), *parts]
    return values
