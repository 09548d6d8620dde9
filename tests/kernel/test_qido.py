"""QIDO-RS query strings and DICOM attribute matching (``medimg_kernel.qido``)."""

from __future__ import annotations

import pytest

from medimg_kernel import qido


def test_wildcards_and_uid_lists_stay_literal_everything_else_is_encoded():
    encoded = qido.encode_query([("PatientID", "SITEA*"), ("PatientName", "D?E"), ("StudyInstanceUID", "1.2,1.3"),
                                 ("InstitutionName", "North General (synthetic)&x=1+y#%^")])
    assert encoded == ("PatientID=SITEA*&PatientName=D?E&StudyInstanceUID=1.2,1.3"
                       "&InstitutionName=North%20General%20(synthetic)%26x%3D1%2By%23%25%5E")


def test_values_with_spaces_are_sent_with_one_character_wildcards_and_remembered():
    pairs = [("InstitutionName", "North General "), ("limit", "5"), ("includefield", "00080080"), ("PatientID", "A")]
    assert qido.approximated(pairs) == {"InstitutionName": "North General "}
    assert qido.upstream_pairs(pairs) == [("InstitutionName", "North?General"), ("limit", "5"),
                                          ("includefield", "00080080"), ("PatientID", "A")]


@pytest.mark.parametrize(("value", "pattern", "vr", "expected"), [
    ("Northfield General Hospital (synthetic)", "Northfield General Hospital (synthetic)", "LO", True),
    ("Northfield-General Hospital (synthetic)", "Northfield General Hospital (synthetic)", "LO", False),
    ("northfield general hospital (synthetic)", "Northfield General Hospital (synthetic)", "LO", False),
    ("CT ABDOMEN ", "CT ABDOMEN", "LO", True),  # DICOM pads with spaces
    ("SITEA001", "SITEA*", "LO", True),
    ("SITEB001", "SITEA*", "LO", False),
    ("SITEA001", "SITEA00?", "LO", True),
    ("SITEA0010", "SITEA00?", "LO", False),
    ("a.b", "a?b", "LO", True),
    ("axb", "a.b", "LO", False),  # regex characters are literal
    ("Doe^Jane", "doe^jane", "PN", True),  # person names case-insensitively
    ("20210615", "20200101-20211231", "DA", True),
    ("20220101", "20200101-20211231", "DA", False),
    ("20220101", "20210101-", "DA", True),
    ("20200101", "-20191231", "DA", False),
    ("1.2.3", "1.2.4,1.2.3", "UI", True),
    ("1.2.5", "1.2.4,1.2.3", "UI", False),
    ("anything", "", "LO", True),
    ("anything", "*", "LO", True),
])
def test_value_matching_follows_ps3_4(value, pattern, vr, expected):
    assert qido.value_matches(value, pattern, vr) is expected


def test_a_result_matches_when_one_of_its_values_does_and_is_undecided_without_the_attribute():
    item = {"00080061": {"vr": "CS", "Value": ["CT", "SEG"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^J"}]}}
    assert qido.item_matches(item, {"ModalitiesInStudy": "SEG"}) is True
    assert qido.item_matches(item, {"ModalitiesInStudy": "MR"}) is False
    assert qido.item_matches(item, {"00100010": "DOE*"}) is True
    assert qido.item_matches(item, {"InstitutionName": "X Y"}) is None
    assert qido.item_matches(item, {"InstitutionName": "X Y", "ModalitiesInStudy": "MR"}) is False
    assert qido.item_matches(item, {"limit": "3"}) is True


def test_unknown_attributes_are_refused_by_name():
    with pytest.raises(qido.QueryError, match="'Hospital' is not a DICOM attribute"):
        qido.attribute("Hospital")
    assert qido.attribute("00080080") == ("InstitutionName", "00080080", "LO")
    assert qido.attribute("StudyDate") == ("StudyDate", "00080020", "DA")
    assert qido.include_fields({"InstitutionName": "x", "limit": "1"}, ["0020000D"]) == ["0020000D", "00080080"]
