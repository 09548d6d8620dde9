"""The streaming multipart/related reader on hand-made messages."""

from __future__ import annotations

import io
import pickle

import pytest

from medimg_kernel.errors import DICOMwebError
from medimg_kernel.multipart import boundary_from_content_type, dataset_from_part, iter_parts
from tests.series_factory import small_ct_series


def _message(bodies, boundary=b"xyzBOUNDARY", content_length=True):
    out = b""
    for body in bodies:
        out += b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n"
        if content_length:
            out += b"Content-Length: %d\r\n" % len(body)
        out += b"\r\n" + body + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


class _Trickle(io.RawIOBase):
    """A stream returning at most ``step`` bytes per read, so boundaries straddle reads."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def read(self, n=-1):
        n = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


@pytest.mark.parametrize("content_length", [True, False])
@pytest.mark.parametrize("step", [1, 7, 4096])
def test_parts_come_back_exactly(content_length, step):
    bodies = [b"first", b"--xyzBOUNDAR not a boundary\r\n--", b"", bytes(range(256)) * 50]
    got = [p.tobytes() for p in iter_parts(_Trickle(_message(bodies, content_length=content_length), step), b"xyzBOUNDARY", chunk_size=16)]
    assert got == bodies


def test_truncated_message_is_an_error():
    data = _message([b"a" * 100])[:-40]
    with pytest.raises(DICOMwebError, match="short of a part|closing boundary"):
        list(iter_parts(io.BytesIO(data), b"xyzBOUNDARY"))


def test_boundary_parsing():
    assert boundary_from_content_type('multipart/related; type="application/dicom"; boundary="a b"') == b"a b"
    with pytest.raises(DICOMwebError, match="multipart/related"):
        boundary_from_content_type("application/json")
    with pytest.raises(DICOMwebError, match="without a boundary"):
        boundary_from_content_type("multipart/related; type=application/dicom")


def test_parts_with_and_without_preamble_decode(tmp_path):
    ds = small_ct_series(seed=9)[0]
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    with_preamble = path.read_bytes()
    without_preamble = with_preamble[132:]  # what Orthanc 1.10 sends
    for body in (with_preamble, without_preamble):
        assert dataset_from_part(body, 0).SOPInstanceUID == ds.SOPInstanceUID
    with pytest.raises(DICOMwebError, match="part 3"):
        dataset_from_part(b"\x00\x01garbage", 3)


def test_read_ahead_gives_the_same_bytes_and_raises_stream_errors():
    from medimg_kernel.multipart import ReadAhead

    data = bytes(range(256)) * 1000
    reader = ReadAhead(io.BytesIO(data), chunk_size=1000, depth=2)
    got = b""
    while chunk := reader.read(777):
        got += chunk
    assert got == data and reader.read() == b""
    reader.close()

    class Broken(io.RawIOBase):
        def read(self, n=-1):
            raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError, match="peer went away"):
        ReadAhead(Broken(), chunk_size=10).read()


def test_native_parts_decode_exactly_and_pickle(tmp_path):
    series = small_ct_series(seed=8)
    bodies = []
    for ds in series:
        path = tmp_path / "p.dcm"
        ds.save_as(path, enforce_file_format=True)
        bodies.append(path.read_bytes()[132:])
    message = _message(bodies, boundary=b"QQ")
    decoded = [dataset_from_part(p, i) for i, p in enumerate(iter_parts(io.BytesIO(message), b"QQ"))]
    for got, original in zip(decoded, series):
        assert isinstance(got.PixelData, bytes)
        assert pickle.loads(pickle.dumps(got)).SOPInstanceUID == original.SOPInstanceUID
        assert (got.pixel_array == original.pixel_array).all()
        assert got.SOPInstanceUID == original.SOPInstanceUID


@pytest.mark.parametrize("cut", [2, 3, 6])
def test_a_message_cut_after_a_boundary_raises(cut):
    """Cut just after a boundary (before "--" or the line end): an error, never fewer parts."""
    data = _message([b"a" * 100, b"b" * 100])
    second = data.index(b"--xyzBOUNDARY", 10) + len(b"--xyzBOUNDARY")
    for stream in (io.BytesIO(data[: second + cut - 2]), _Trickle(data[: second + cut - 2], 5)):
        with pytest.raises(DICOMwebError, match="closing boundary|headers"):
            list(iter_parts(stream, b"xyzBOUNDARY"))
    closing = data.rindex(b"--xyzBOUNDARY--") + len(b"--xyzBOUNDARY")
    with pytest.raises(DICOMwebError, match="closing boundary"):
        list(iter_parts(io.BytesIO(data[:closing]), b"xyzBOUNDARY"))


def test_pixel_data_tag_bytes_inside_a_header_value_are_not_taken_for_pixel_data(tmp_path):
    from medimg_kernel.multipart import Part

    ds = small_ct_series(seed=10)[0]
    ds.add_new(0x00091010, "LO", "MEDIMG")  # private creator
    ds.add_new(0x00091011, "OB", b"\xe0\x7f\x10\x00OW\x00\x00" + (1 << 20).to_bytes(4, "little"))
    path = tmp_path / "p.dcm"
    ds.save_as(path, enforce_file_format=True)
    body = path.read_bytes()[132:]
    (part,) = iter_parts(io.BytesIO(_message([body], boundary=b"QQ")), b"QQ")
    assert isinstance(part, Part) and part.pixels is not None and part.tobytes() == body
    got = dataset_from_part(part, 0)
    assert got[0x00091011].value == ds[0x00091011].value
    assert (got.pixel_array == ds.pixel_array).all()
