"""Which files of a folder make the CT: patients, the series choice, a file opened alone, macOS
companions, files without the DICOM preamble and segmentation objects."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_factory import save_without_preamble, series_hu, write_series
from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.readers import read_ct

# What macOS writes as '._name' beside each file copied to a foreign disk (an AppleDouble header).
_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4060)
# Files found beside exported series that are not DICOM and must be passed over without a word.
_NOT_DICOM = {
    "README.TXT": b"Exported by the PACS viewer.\r\n",
    "Thumbs.db": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504),
    ".DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(200),
    "preview.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(300),
}


def _warnings(path) -> list[str]:
    return read_ct(path).metadata["warnings"]


def test_series_of_two_patients_are_refused_naming_their_ids(tmp_path):
    """The folder's larger series, the other patient's, was opened with only a UID in the warning."""
    write_series(tmp_path / "a", series_hu(3), patient=("P001", "Doe^Jane"))
    write_series(tmp_path / "b", series_hu(5), patient=("P999", "Roe^Richard"))
    with pytest.raises(
        InvalidVolumeError, match=r"2 patients \(PatientID P001, P999\); give the folder of one"
    ) as refusal:
        read_ct(tmp_path)
    assert "Doe" not in str(refusal.value) and "Roe" not in str(refusal.value)
    assert read_ct(tmp_path / "a").shape[0] == 3


def test_patients_without_ids_are_told_apart_by_name(tmp_path):
    write_series(tmp_path / "a", series_hu(3), patient=("", "Doe^Jane"))
    write_series(tmp_path / "b", series_hu(3), patient=("", "Roe^Richard"))
    with pytest.raises(InvalidVolumeError, match="2 patients \\(told apart by PatientName\\)") as refusal:
        read_ct(tmp_path)
    assert "Doe" not in str(refusal.value)


def test_series_choice_warning_names_the_opened_series_and_the_others(tmp_path):
    write_series(tmp_path, series_hu(4), series_number=2, description="Thorax 2.0 Br40", name="a")
    write_series(
        tmp_path, series_hu(3), series_number=3, description="Thorax 1.0 Bl57", name="b", thickness_mm=1.0
    )
    volume = read_ct(tmp_path)
    assert volume.shape[0] == 4
    assert volume.metadata["warnings"] == [
        'found 2 image series; opened series 2 "Thorax 2.0 Br40" (4 slices, 2 mm thick), '
        'not series 3 "Thorax 1.0 Bl57" (3 slices, 1 mm thick); to open another, select its files'
    ]


def test_study_dates_are_named_when_the_folder_holds_two_studies(tmp_path):
    write_series(tmp_path, series_hu(4), series_number=2, name="a", study=("1.2.3.1", "20240102"))
    write_series(tmp_path, series_hu(3), series_number=2, name="b", study=("1.2.3.2", "20230506"))
    [warning] = _warnings(tmp_path)
    assert "series 2 " in warning and "(4 slices, 2 mm thick, study of 2024-01-02)" in warning
    assert "(3 slices, 2 mm thick, study of 2023-05-06)" in warning


def test_a_study_date_that_is_no_calendar_date_is_shown_as_written(tmp_path):
    """The series choice formatted any 8 digits as a date ("2024-13-02"), the PDF only a calendar-like
    one: one rule now, the PDF's (io/dicom_headers.py format_dicom_date)."""
    write_series(tmp_path, series_hu(4), series_number=2, name="a", study=("1.2.3.1", "20241302"))
    write_series(tmp_path, series_hu(3), series_number=2, name="b", study=("1.2.3.2", "20230506"))
    [warning] = _warnings(tmp_path)
    assert "study of 20241302)" in warning and "study of 2023-05-06)" in warning


def test_many_other_series_are_counted_after_five(tmp_path):
    for number in range(1, 8):
        write_series(
            tmp_path, series_hu(2 if number > 1 else 3, 8, 8), series_number=number, name=f"s{number}_"
        )
    [warning] = _warnings(tmp_path)
    assert "opened series 1 " in warning and "series 6 " in warning and "series 7 " not in warning
    assert "; and 1 more;" in warning


@pytest.mark.parametrize("first_name", ["a", "z"])
@pytest.mark.parametrize("uid_order", ["as numbered", "reversed"])
def test_equal_series_are_chosen_by_a_fixed_rule_not_by_file_names(tmp_path, first_name, uid_order):
    """Two equal series of a flat export (files named by UID) opened either, by file-system order."""
    uids = ["1.2.826.0.1.3680043.8.498.10", "1.2.826.0.1.3680043.8.498.20"]
    if uid_order == "reversed":
        uids.reverse()
    other_name = "z" if first_name == "a" else "a"
    hu = series_hu(3)
    write_series(tmp_path, hu, series_number=2, series_uid=uids[0], name=first_name)
    write_series(tmp_path, hu + 7, series_number=3, series_uid=uids[1], name=other_name)
    np.testing.assert_array_equal(read_ct(tmp_path).hu, hu)


def test_thinner_slices_win_a_tie_before_the_series_number(tmp_path):
    hu = series_hu(3)
    write_series(tmp_path, hu + 7, series_number=2, name="a")
    write_series(tmp_path, hu, series_number=5, name="b", thickness_mm=1.0)
    np.testing.assert_array_equal(read_ct(tmp_path).hu, hu)


def test_single_file_warns_when_its_folder_holds_the_rest_of_its_series(axial_series):
    folder, _hu = axial_series
    write_series(folder, series_hu(3), name="other")  # another series: not counted
    (folder / "._IM0001.dcm").write_bytes(_APPLEDOUBLE)
    volume = read_ct(folder / "IM0004.dcm")
    assert volume.shape[0] == 1
    assert volume.metadata["warnings"] == [
        "opened 1 file; its folder holds 7 more slices of the same series: open the folder to read the whole scan"
    ]


def test_single_file_alone_in_its_folder_opens_without_a_warning(tmp_path):
    path = write_series(tmp_path / "s", series_hu(1))[0]
    (tmp_path / "s" / "README.TXT").write_text("one slice")
    write_series(tmp_path, series_hu(2), series_uid=pydicom.dcmread(path).SeriesInstanceUID)  # another folder
    assert _warnings(path) == []


def test_appledouble_companions_are_passed_over_silently(axial_series):
    """Each '._IM….dcm' companion was reported as a damaged DICOM file."""
    folder, hu = axial_series
    for path in list(folder.iterdir()):
        (folder / f"._{path.name}").write_bytes(_APPLEDOUBLE)
    volume = read_ct(folder)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.metadata["warnings"] == []
    with pytest.raises(InvalidVolumeError, match=r"macOS '\._' companion file .* not DICOM"):
        read_ct(folder / "._IM0001.dcm")


@pytest.mark.parametrize("suffix", [".dcm", ""])
def test_files_without_the_dicom_preamble_are_read_and_other_files_ignored(tmp_path, suffix):
    """With .dcm they were 'damaged' (exit 2); without a suffix the folder 'contains no DICOM files'."""
    hu = series_hu(3)
    for path in write_series(tmp_path, hu):
        save_without_preamble(path)
        path.rename(path.with_suffix(suffix))
    for name, content in _NOT_DICOM.items():
        (tmp_path / name).write_bytes(content)
    volume = read_ct(tmp_path)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.metadata["warnings"] == []
    assert read_ct(tmp_path / f"slice001{suffix}").shape[0] == 1


def test_bare_dataset_without_file_meta_is_read(tmp_path):
    """Old exports hold only the dataset: no preamble and no file meta, implicit VR little endian."""
    hu = series_hu(2)
    for path in write_series(tmp_path, hu):
        ds = pydicom.dcmread(path)
        ds.file_meta, ds.preamble = FileMetaDataset(), None
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
        assert path.read_bytes()[:2] == b"\x08\x00"
    np.testing.assert_array_equal(read_ct(tmp_path).hu, hu)


def test_folder_of_files_that_are_not_dicom_still_holds_no_dicom(tmp_path):
    for name, content in {**_NOT_DICOM, "._slice000.dcm": _APPLEDOUBLE}.items():
        (tmp_path / name).write_bytes(content)
    with pytest.raises(InvalidVolumeError, match="contains no DICOM files"):
        read_ct(tmp_path)


def _write_seg(path, n_frames: int = 3) -> None:
    """A binary DICOM segmentation (SEG) of ``n_frames`` 8 x 8 frames."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    seg = pydicom.Dataset()
    seg.file_meta = meta
    seg.SOPClassUID, seg.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    seg.Modality, seg.PatientID, seg.SeriesInstanceUID = "SEG", "T001", generate_uid()
    seg.Rows = seg.Columns = 8
    seg.NumberOfFrames, seg.SamplesPerPixel, seg.PhotometricInterpretation = n_frames, 1, "MONOCHROME2"
    seg.BitsAllocated = seg.BitsStored = 1
    seg.HighBit, seg.PixelRepresentation, seg.SegmentationType = 0, 0, "BINARY"
    frames = []
    for k in range(n_frames):
        position, frame = pydicom.Dataset(), pydicom.Dataset()
        position.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        frame.PlanePositionSequence = DicomSequence([position])
        frames.append(frame)
    seg.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    seg.PixelData = np.packbits(np.ones(n_frames * 64, dtype=np.uint8), bitorder="little").tobytes()
    seg.save_as(path, enforce_file_format=True)


def test_folder_holding_only_a_segmentation_is_refused_as_such(tmp_path):
    """It was refused as a non-CT series of label values, with advice to pass --intensity hu."""
    _write_seg(tmp_path / "SEG.dcm")
    with pytest.raises(
        InvalidVolumeError, match=r"only a DICOM segmentation \(SEG\) object, no CT image series"
    ) as refusal:
        read_ct(tmp_path)
    assert "--intensity" not in str(refusal.value)


def test_segmentation_beside_its_ct_is_not_counted_as_an_image_series(axial_series):
    folder, hu = axial_series
    _write_seg(folder / "SEG.dcm", n_frames=8)
    volume = read_ct(folder)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.metadata["warnings"] == []
