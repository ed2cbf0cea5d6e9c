import pytest

from common import io


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "out.jsonl"
    io.write_jsonl(p, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        io.write_jsonl(p, rows())
    assert p.read_text() == '{"a": 1}\n'
    assert [x.name for x in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_write_json_roundtrip(tmp_path):
    p = io.write_json(tmp_path / "sub" / "m.json", {"新": 1})
    assert p.read_text(encoding="utf-8") == '{\n  "新": 1\n}\n'


def test_atomic_write_gets_the_mode_open_would_give(tmp_path):
    """Reports and predictions are shared files: not mkstemp's owner-only 0600."""
    import os

    old = os.umask(0o022)
    try:
        p = io.write_text(tmp_path / "report.html", "<html></html>")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644
