"""An anonymised report never shows a case name holding the patient's name: the name's words are matched
with their hyphens and apostrophes taken out too, on both sides (PatientName "OBRIEN^SEAN" as many
scanners store it, a folder the user typed as "O'Brien CT")."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from napari_chsnet.report.anonymize import (
    anonymous_case_name,
    anonymous_input_name,
    identifying_values,
    scrub_identifiers,
)


@pytest.mark.parametrize(
    ("case", "name"),
    [
        ("O'Brien CT", "OBRIEN^SEAN"),
        ("Smith-Jones chest", "SMITHJONES^ANN"),
        ("ct=Mc-Donald", "MCDONALD^J"),
        # joined words within file-name separators (underscore, hyphen, typographic apostrophe): these
        # kept the patient's name in anonymised reports
        ("O'Brien_CT", "OBRIEN^SEAN"),
        ("ct_O'Brien", "OBRIEN^SEAN"),
        ("O'Brien-CT", "OBRIEN^SEAN"),
        ("O\u2019Brien_2", "OBRIEN^SEAN"),
        ("Smith-Jones_chest", "SMITHJONES^ANN"),
    ],
)
def test_a_case_name_holding_the_joined_surname_is_replaced(case, name):
    # Split at its punctuation the case gives "o", "brien", "ct": none is a word of the name; joined
    # within one name component ("o'brien" -> "obrien") it is the surname, so the case is renamed.
    identity = {"PatientName": name, "PatientID": "X-991", "SeriesInstanceUID": "1.2.3.4.5"}
    shown, warning = anonymous_case_name(case, identity)
    assert re.fullmatch(r"case-[0-9a-f]{12}", shown)
    assert warning is not None and "holds the patient's name or ID" in warning


def test_joined_pieces_that_are_no_name_word_keep_the_case_name():
    # the other side: "o'scan" joins to "oscan", which is no word of O'Brien^Sean
    identity = {"PatientName": "OBRIEN^SEAN", "PatientID": "X-991", "SeriesInstanceUID": "1.2.3.4.5"}
    assert anonymous_case_name("O'Scan CT", identity) == ("O'Scan CT", None)


def test_identifying_values_are_scrubbed_in_any_letter_case():
    # scrub_identifiers promises the values "in any case": a scanner stores "Doe^Jane", a reader
    # warning or a folder name quotes it as "DOE JANE" or "doe"; every one of them goes.
    values = identifying_values(
        {"PatientName": "Doe^Jane", "PatientID": "pid-0042"}, ["PatientName", "PatientID"]
    )
    text = "DOE JANE's scan (PID-0042) read from /data/doe/ct"
    assert scrub_identifiers(text, values) == "[removed]'s scan ([removed]) read from /data/[removed]/ct"


def test_a_dotted_group_of_four_numbers_is_a_uid_and_a_version_of_three_is_not():
    # Boundary of _UID: version numbers (napari 0.5.4, Python 3.11.4) have three dotted groups and
    # stay; a DICOM UID (root.org.suffix..., e.g. the 1.2.3.4.5 the tests' series carry, or GE's
    # 1.2.840.113619 root) has four or more and is taken out.
    text = "series 1.2.840.113619 and 1.2.3.4.5 skipped; napari 0.5.4, Python 3.11.4, 2.5 mm"
    assert (
        scrub_identifiers(text)
        == "series [removed] and [removed] skipped; napari 0.5.4, Python 3.11.4, 2.5 mm"
    )


def test_an_unreadable_inputs_name_is_keyed_so_a_guessed_name_cannot_be_hashed_to_match(tmp_path):
    # anonymous_input_name: "case-" + a hash keyed with the input's path, inode and mtime, none of
    # which a report shows. Unkeyed, anyone who guesses the case name (the patient's) could hash it
    # and find the row.
    source = tmp_path / "DOE^JANE.nii.gz"
    source.write_bytes(b"not a volume")
    name = anonymous_input_name("DOE^JANE", source)
    assert re.fullmatch(r"case-[0-9a-f]{12}", name)
    assert name == anonymous_input_name("DOE^JANE", source)  # the same input: the same name
    assert name != "case-" + hashlib.blake2b(b"DOE^JANE", digest_size=6).hexdigest()


def test_every_part_of_a_long_key_tells_inputs_apart(tmp_path):
    """blake2b keys hold 64 bytes: the key was cut there, so under a folder path of 64 bytes or more
    two inputs of the same name got the same case-… name (and a failed row of one could be replaced by
    the other's result). The same input fixed in place keeps its name (its row gives way to the
    case's): the key holds its path and inode, not its modification time."""
    root = tmp_path / ("a_study_folder_with_a_long_enough_name_" * 2) / "batch_2020_site_03"
    first, second = root / "x" / "DOE^JANE.nii.gz", root / "y" / "DOE^JANE.nii.gz"
    for path in (first, second):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"not a volume")
    assert len(str(first.resolve()).encode()) > 64
    before = anonymous_input_name("DOE^JANE", first)
    assert before != anonymous_input_name("DOE^JANE", second)
    with first.open("wb") as fixed:  # rewritten in place (as shutil.copy onto it): same inode, new mtime
        fixed.write(b"a readable volume now")
    os.utime(first, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    assert anonymous_input_name("DOE^JANE", first) == before


def test_a_replaced_case_name_depends_on_the_study_and_patient_past_a_long_series_uid():
    # A 64-character SeriesInstanceUID filled the whole cut key: the StudyInstanceUID and PatientID
    # after it counted for nothing.
    series = "1.2.826.0.1.3680043.8.498." + "1" * 38
    assert len(series) == 64
    one = {
        "SeriesInstanceUID": series,
        "StudyInstanceUID": "1.2.3.4",
        "PatientID": "DOE123",
        "PatientName": "DOE^JANE",
    }
    other = {**one, "StudyInstanceUID": "1.2.3.5"}
    name, warning = anonymous_case_name("DOE123_ct", one)
    assert warning is not None and re.fullmatch(r"case-[0-9a-f]{12}", name)
    assert name == anonymous_case_name("DOE123_ct", dict(one))[0]
    assert name != anonymous_case_name("DOE123_ct", other)[0]
