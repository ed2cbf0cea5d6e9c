import json

import pytest

from common.errors import DataError
from common.metrics.brand import BrandMatcher, Sample, brand_recalls, load_aliases, normalize

BRANDS = ["Coca-Cola", "HP", "Nike", "李宁"]


@pytest.fixture
def matcher():
    return BrandMatcher(BRANDS, {"Nike": ["耐克"]})


def test_normalize():
    assert normalize("  Coca-Cola®  ZERO!! ") == "coca cola zero"
    assert normalize("ＨＰ") == "hp"  # full-width letters


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("A can of COCA COLA on a table", {"Coca-Cola"}),
        ("cocacola bottle", {"Coca-Cola"}),
        ("Coca-Cola.", {"Coca-Cola"}),
        ("a champion mug", set()),
        ("an hp laptop", {"HP"}),
        ("耐克运动鞋", {"Nike"}),
        ("李宁 跑鞋 and a NIKE cap", {"李宁", "Nike"}),
        ("no visible brand", set()),
    ],
)
def test_names(matcher, caption, expected):
    assert matcher.names(caption) == expected


def test_five_recalls_on_hand_made_samples(matcher):
    samples = [
        Sample("logo", "Nike", "a nike shoe"),
        Sample("logo", "Nike", "a shoe"),
        Sample("logo", "HP", "hp laptop"),
        Sample("none", None, "no visible brand"),
        Sample("none", None, "a nike thing"),
        Sample("none_brand", "Nike", "an hp laptop"),
        Sample("none_brand", "Nike", "nike style"),
        Sample("none_brand", "Nike", "plain shoe"),
    ]
    r = brand_recalls(samples, matcher)
    assert r["logo_recall"] == pytest.approx(2 / 3)
    assert r["brand_recall"] == pytest.approx(0.75)
    assert r["none_recall"] == pytest.approx(0.5)
    assert r["none_brand_recall"] == pytest.approx(2 / 3)
    assert r["none_brand_label_recall"] == pytest.approx(1 / 3)


def test_missing_kind_is_nan_not_zero(matcher):
    r = brand_recalls([Sample("logo", "HP", "hp")], matcher)
    assert r["logo_recall"] == 1.0 and r["none_recall"] != r["none_recall"]


def test_alias_file_errors(tmp_path):
    with pytest.raises(DataError, match="brand alias file not found"):
        load_aliases(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="cannot parse"):
        load_aliases(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"Nike": "耐克"}))
    with pytest.raises(DataError, match="list of alias strings"):
        load_aliases(wrong)
    with pytest.raises(DataError, match="unknown brand"):
        BrandMatcher(["HP"], {"Nike": ["耐克"]})
