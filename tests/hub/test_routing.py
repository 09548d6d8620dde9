"""Routing rules and the [receiver]/[[routes]] settings (pure functions; the receiver itself: test_receiver.py)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from medimg_hub.pacs.routing import is_image, route
from medimg_hub.settings import RouteSettings, load_settings
from medimg_kernel.errors import ConfigurationError

ROUTES = (RouteSettings("chest", calling_aet="CT*", match=("Modality=CT", "BodyPartExamined=CHEST")),
          RouteSettings("north", institution="Northfield General Hospital", station="CT?"),
          RouteSettings("any-mr", match=("Modality=MR",)))


def _ds(**attrs: object) -> Dataset:
    ds = Dataset()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize(("calling", "attrs", "expected"), [
    ("CT01", {"Modality": "CT", "BodyPartExamined": "CHEST"}, "chest"),
    ("MR01", {"Modality": "CT", "BodyPartExamined": "CHEST"}, None),  # the AE title is a condition
    ("CT01", {"Modality": "CT", "BodyPartExamined": "ABDOMEN", "InstitutionName": "Northfield General Hospital",
              "StationName": "CT7"}, "north"),  # rule 1 fails on one condition: rule 2
    ("CT01", {"Modality": "CT", "BodyPartExamined": "CHEST", "InstitutionName": "Northfield General Hospital",
              "StationName": "CT7"}, "chest"),  # both hold: the first wins
    ("X", {"InstitutionName": "Northfield General Hospital", "StationName": "CT77"}, None),  # ? is one character
    ("X", {"Modality": "MR"}, "any-mr"),
    ("X", {}, None),
])
def test_the_first_rule_whose_every_condition_holds_names_the_dataset(calling, attrs, expected):
    assert route(ROUTES, calling, _ds(**attrs)) == expected
    assert route(ROUTES, calling, _ds(**attrs), default="inbox") == (expected or "inbox")


def test_images_are_told_from_other_objects():
    assert is_image("1.2.840.10008.5.1.4.1.1.2") and is_image("1.2.840.10008.5.1.4.1.1.1.1")  # CT, DX
    assert not is_image("1.2.840.10008.5.1.4.1.1.88.11") and not is_image("1.2.840.10008.5.1.4.1.1.66.4")  # SR, SEG
    assert not is_image("1.2.840.10008.5.1.4.1.1.104.1") and not is_image("1.2.3.4")  # PDF, unknown


@pytest.mark.parametrize(("toml", "message"), [
    ('[receiver]\nport = 11112\n', "senders is empty"),
    ('[receiver]\nport = 11112\nsenders = ["CT01"]\n', "must be 'AETITLE@host'"),
    ('[receiver]\nmax_pdu_bytes = 1024\n', "max_pdu_bytes=1024 must be 0 \\(no limit\\) or at least 4096"),
    ('[receiver]\ndefault_dataset = "nope"\n', "default_dataset='nope' is not a \\[\\[datasets\\]\\] name"),
    ('[[routes]]\ndataset = "nope"\n', "dataset='nope' is not a \\[\\[datasets\\]\\] name"),
    ('[[routes]]\ndataset = "site-a"\nmatch = ["Colour=red"]\n', "'Colour' is not a DICOM attribute keyword"),
    ('[[routes]]\ndataset = "site-a"\nmatch = ["Modality"]\n', "must be 'Keyword=pattern'"),
    ('[[routes]]\ndataset = "site-a"\nhospital = "x"\n', "unknown key\\(s\\) \\['hospital'\\] in \\[routes\\[0\\]\\]"),
])
def test_receiver_settings_that_cannot_work_are_refused_by_name(tmp_path, toml, message):
    (tmp_path / "medimg.toml").write_text(toml)
    with pytest.raises(ConfigurationError, match=message):
        load_settings(tmp_path / "medimg.toml")


def test_routes_read_back_from_the_settings_file(tmp_path):
    (tmp_path / "medimg.toml").write_text('[receiver]\nport = 11112\nsenders = ["CT01@10.0.0.5", "PACS@*"]\n'
                                          '[[routes]]\ndataset = "site-a"\ncalling_aet = "CT01"\n'
                                          'match = ["Modality=CT"]\n')
    settings = load_settings(tmp_path / "medimg.toml")
    assert settings.receiver.sender_list() == [("CT01", "10.0.0.5"), ("PACS", "*")]
    assert settings.routes == (RouteSettings("site-a", calling_aet="CT01", match=("Modality=CT",)),)
