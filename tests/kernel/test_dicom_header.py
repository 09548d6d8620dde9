"""The explicit VR little endian header reader gives what dcmread gives, or declines."""

from __future__ import annotations

import copy
import io
import pickle
import struct

import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medimg_kernel.dicom_header import PIXEL_DATA_TAG, native_pixel_data_offset, read_header
from tests.series_factory import small_ct_series


def _encode(ds: Dataset, *, preamble: bool, syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds = copy.deepcopy(ds)
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian,
               little_endian=syntax != ExplicitVRBigEndian)
    data = buffer.getvalue()
    return data if preamble else data[132:]


def _header(data: bytes) -> bytes:
    return data[: data.rfind(PIXEL_DATA_TAG)]


def _assert_same(got: FileDataset, expected: FileDataset) -> None:
    assert type(got) is type(expected)
    assert got == expected and got.file_meta == expected.file_meta
    assert list(got.keys()) == list(expected.keys())
    assert list(got.file_meta.keys()) == list(expected.file_meta.keys())
    assert got.preamble == expected.preamble
    assert got.original_encoding == expected.original_encoding
    assert got.original_character_set == expected.original_character_set
    assert got.file_meta.original_encoding == expected.file_meta.original_encoding
    assert (got.filename, got.fileobj_type, got.timestamp) == (expected.filename, expected.fileobj_type, expected.timestamp)
    for tag in expected.keys():  # raw elements: same VR, length, value and file offset
        a, b = got.get_item(tag), expected.get_item(tag)
        if hasattr(a, "value_tell") and hasattr(b, "value_tell"):
            assert tuple(a) == tuple(b), tag
        assert got[tag].value == expected[tag].value and got[tag].VR == expected[tag].VR


def _dcmread(header: bytes) -> FileDataset:
    return pydicom.dcmread(io.BytesIO(header), force=True, stop_before_pixels=True)


@pytest.mark.parametrize("preamble", [True, False])
def test_headers_read_like_dcmread(preamble):
    for ds in small_ct_series(seed=5)[:2]:
        header = _header(_encode(ds, preamble=preamble))
        got = read_header(header)
        assert got is not None
        _assert_same(got, _dcmread(header))
        assert pickle.loads(pickle.dumps(got)) == got
        assert copy.deepcopy(got) == got


@pytest.mark.parametrize(("charset", "name"), [
    ("ISO_IR 100", "Müller^Jörg"), ("ISO_IR 192", "山田^太郎"), ("ISO_IR 144", "Иванов^Иван"),
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎"), (None, "PLAIN^ASCII"),
])
def test_character_sets_and_empty_values(charset, name):
    ds = small_ct_series(seed=6)[0]
    if charset is None:
        del ds.SpecificCharacterSet
    else:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.InstitutionAddress = ""  # empty values
    ds.ReferringPhysicianName = ""
    header = _header(_encode(ds, preamble=False))
    got = read_header(header)
    assert got is not None
    _assert_same(got, _dcmread(header))
    assert str(got.PatientName) == name


def _with_sequence() -> tuple[Dataset, bytes, int]:
    ds = small_ct_series(seed=6)[0]
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedImageSequence = Sequence([item])
    header = _header(_encode(ds, preamble=False))
    return ds, header, header.find(b"\x08\x00\x40\x11SQ\x00\x00")


def test_defined_length_sequences_stay_raw_and_read_the_same():
    _, header, start = _with_sequence()
    assert start > 0 and header[start + 8 : start + 12] != b"\xff\xff\xff\xff"  # pydicom 3 writes defined lengths
    got = read_header(header)
    assert got is not None
    assert type(got.get_item(0x00081140)).__name__ == "RawDataElement"
    _assert_same(got, _dcmread(header))
    assert got.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"


def test_undefined_length_sequences_are_declined():
    _, header, start = _with_sequence()
    (length,) = struct.unpack("<L", header[start + 8 : start + 12])
    items = header[start + 12 : start + 12 + length]
    undefined = (header[:start] + b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff" + items
                 + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00" + header[start + 12 + length :])
    assert read_header(undefined) is None
    assert _dcmread(undefined).ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_other_transfer_syntaxes_are_declined(syntax):
    ds = small_ct_series(seed=7)[0]
    data = _encode(ds, preamble=False, syntax=syntax)
    assert read_header(data[: len(data) - len(ds.PixelData) - 12]) is None


def test_what_it_cannot_read_exactly_is_declined():
    ds = small_ct_series(seed=7)[0]
    header = _header(_encode(ds, preamble=False))
    assert read_header(header) is not None
    assert read_header(header[:-3]) is None  # ends inside an element
    assert read_header(header[200:]) is None  # no File Meta group first
    assert read_header(b"") is None
    unknown_vr = header.replace(b"LO", b"Q?", 1)  # an unknown VR: dcmread's heuristics decide
    assert read_header(unknown_vr) is None
    empty_charset = ds.copy()
    empty_charset.SpecificCharacterSet = ""
    assert read_header(_header(_encode(empty_charset, preamble=False))) is None
    with_command = header + b"\x00\x00\x00\x01UL\x04\x00\x01\x00\x00\x00"  # group 0000 after the dataset
    assert read_header(with_command) is None


def test_native_pixel_data_offset():
    ds = small_ct_series(seed=8)[0]
    data = _encode(ds, preamble=False)
    offset = native_pixel_data_offset(data[:4096], len(data))
    assert offset == data.rfind(PIXEL_DATA_TAG)
    assert native_pixel_data_offset(data[:4096], len(data) + 2) is None  # something after the pixel data
    assert native_pixel_data_offset(data[:offset + 6], len(data)) is None  # element header not all there
    encapsulated = data[:offset] + PIXEL_DATA_TAG + b"OB\x00\x00\xff\xff\xff\xff" + b"\x00" * 20
    assert native_pixel_data_offset(encapsulated, len(encapsulated)) is None
    fake = b"\x00" * 8 + PIXEL_DATA_TAG + b"OW\x00\x00" + (3).to_bytes(4, "little") + b"abc"  # wrong length first
    assert native_pixel_data_offset(fake + data, len(fake) + len(data)) == len(fake) + offset
