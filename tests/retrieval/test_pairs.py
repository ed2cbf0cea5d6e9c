"""Ditto-style pair text: serialisation, the TF-IDF summariser and the augmentation operators."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import ConfigError
from retrieval.pairs import Augmenter, Summariser, attributes, serialise_record


def test_serialise_every_attribute_in_order_empty_values_keep_their_marker():
    row = {"id": "7", "name": "Sony  DVD\nplayer", "description": None, "price": float("nan")}
    assert serialise_record(row) == "COL name VAL Sony DVD player COL description VAL COL price VAL"
    assert serialise_record(row, ["price", "name"]) == "COL price VAL COL name VAL Sony DVD player"


def test_attributes_round_trip_ditto_text():
    text = "COL name VAL lg 24 ' dishwasher COL description VAL COL price VAL 19.99"
    assert attributes(text) == [("name", "lg 24 ' dishwasher"), ("description", ""), ("price", "19.99")]
    assert attributes("plain title") == [("text", "plain title")]


def test_summariser_keeps_markers_and_the_rarest_tokens_in_order():
    corpus = ["COL name VAL sony player COL description VAL the black player with remote"] * 5 + [
        "COL name VAL sony dvpnc800hs COL description VAL silver"]
    s = Summariser(max_tokens=10).fit(corpus)
    # markers: COL name VAL + COL description VAL = 6 tokens, so 4 value tokens stay: the rare ones
    # (dvpnc800hs, silver appear once), then the commoner ones by TF-IDF (ties: the earlier), never a stop word
    long = "COL name VAL sony dvpnc800hs COL description VAL the black player with remote silver"
    out = s(long)
    assert out == "COL name VAL dvpnc800hs COL description VAL black player silver"  # sony: in every record
    assert len(out.split()) == 10
    short = "COL name VAL sony COL description VAL silver"
    assert s(short) == short  # within budget: unchanged


@given(st.lists(st.sampled_from("ab cd ef gh ij kl mn op".split()), min_size=1, max_size=60), st.integers(8, 40))
def test_summariser_never_exceeds_its_budget_and_keeps_token_order(words, budget):
    text = f"COL title VAL {' '.join(words)}"
    out = Summariser(budget).fit([text])(text)
    kept = attributes(out)[0][1].split()
    assert len(out.split()) <= max(budget, len(text.split()) if len(text.split()) <= budget else budget)
    it = iter(words)  # a subsequence of the original tokens
    assert all(w in it for w in kept)


def test_summariser_budget_below_the_markers_is_a_config_error():
    with pytest.raises(ConfigError, match="at least 8 tokens"):
        Summariser(4)


@pytest.mark.parametrize("op", ["span_del", "span_shuffle", "attr_del", "attr_shuffle", "entry_swap"])
def test_each_operator_changes_one_side_and_keeps_the_format(op):
    left = "COL name VAL sony silver dvd player model x COL price VAL 10"
    right = "COL name VAL panasonic combo recorder unit COL price VAL 12"
    aug = Augmenter([op], p=1.0, seed=3)
    outs = {aug(left, right) for _ in range(20)}
    assert any(o != (left, right) for o in outs)
    for a, b in outs:
        if op == "entry_swap":
            assert (a, b) == (right, left)
            continue
        assert (a == left) + (b == right) >= 1  # one side changed at most
        for changed, orig in ((a, left), (b, right)):
            assert changed.startswith("COL ")
            assert sorted(changed.split()) == sorted(orig.split()) or op in ("span_del", "attr_del")
            if op == "span_del":
                assert len(changed.split()) < len(orig.split()) or changed == orig


def test_augmenter_p0_is_identity_and_bad_ops_are_config_errors():
    assert Augmenter(["span_del"], p=0.0)("COL a VAL x y", "COL a VAL z") == ("COL a VAL x y", "COL a VAL z")
    with pytest.raises(ConfigError, match="unknown operator 'mix'"):
        Augmenter(["mix"])


def test_summariser_spends_a_budget_of_subword_tokens():
    cost = {"dvpnc800hs": 4}.get
    s = Summariser(10, cost=lambda w: cost(w, 1)).fit(["COL name VAL sony player"] * 3 + ["COL name VAL dvpnc800hs x"])
    # markers 3, budget 7: extra (unseen: rarest, 1) + dvpnc800hs (4) + x (1) + sony (1, the earlier of the two
    # commonest) = 7; player would be the 8th
    assert s("COL name VAL sony dvpnc800hs player x extra") == "COL name VAL sony dvpnc800hs x extra"
