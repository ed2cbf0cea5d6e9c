"""``python -m vlm.bench_serve``: a small load (8 requests per row) writes its section into a docs file,
replacing the old one and keeping the others; every echo answer was checked against its own request."""

from __future__ import annotations

from vlm.bench_serve import HEAD, main


def test_bench_serve_writes_its_rows_into_the_docs_section(tmp_path, capsys):
    docs = tmp_path / "vlm.md"
    docs.write_text(f"# vlm bench\n\n## other figures\n\nkept\n\n{HEAD}\n\nold figures\n\n## after\n\nkept too\n")
    main(["--requests", "8", "--max-batch", "4", "--call-ms", "5", "--item-ms", "0", "--docs", str(docs)])
    text = docs.read_text()
    assert "old figures" not in text and "kept\n" in text and "## after\n\nkept too\n" in text
    section = text.split(HEAD, 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ")[:2] for line in section.splitlines() if line.startswith("| echo")]
    assert rows == [["| echo", "4"], ["| echo", "1"]]
    assert "command: `python -m vlm.bench_serve --requests 8 --max-batch 4" in section
    assert "8 chat requests at once" in section and "none mixed up" in section
    assert capsys.readouterr().out.startswith(HEAD)
