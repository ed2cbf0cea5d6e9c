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
