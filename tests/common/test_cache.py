"""``common.cache.build_once``: built once per path, renamed into place whole, nothing left by a failed build."""

from __future__ import annotations

import pytest

from common.cache import build_once, content_hash, is_complete


def test_content_hash_is_stable_and_order_free():
    assert content_hash({"a": 1, "b": [2]}) == content_hash({"b": [2], "a": 1}) != content_hash({"a": 2, "b": [2]})
    assert len(content_hash("x", 16)) == 16


def test_a_file_and_a_folder_are_built_once(tmp_path):
    calls = []

    def write_file(tmp):
        calls.append("f")
        tmp.write_text("v")

    def write_dir(tmp):
        calls.append("d")
        (tmp / "sub").mkdir(parents=True)
        (tmp / "sub" / "x.txt").write_text("v")

    for _ in range(2):
        assert build_once(tmp_path / "f.txt", write_file).read_text() == "v"
        assert (build_once(tmp_path / "d", write_dir) / "sub" / "x.txt").read_text() == "v"
    assert calls == ["f", "d"]
    assert is_complete(tmp_path / "d") and sorted(p.name for p in tmp_path.iterdir()) == ["d", "f.txt"]


def test_a_failed_build_leaves_nothing_and_an_interrupted_folder_is_rebuilt(tmp_path):
    def broken(tmp):
        tmp.mkdir()
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_once(tmp_path / "d", broken)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "d").mkdir()  # an older, unfinished folder without its DONE marker
    (tmp_path / "d" / "stale").write_text("x")
    out = build_once(tmp_path / "d", lambda tmp: tmp.mkdir())
    assert sorted(p.name for p in out.iterdir()) == ["DONE"]
