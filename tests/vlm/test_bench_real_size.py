"""``python -m vlm.bench --real-size`` at ``--scale tiny``: the real configs shrunk, the same code path (towers saved
and loaded by path, the repo's policies), in-process and in seconds. Timings are never asserted."""

from __future__ import annotations

import argparse

from vlm import bench, realsize


def _args(tmp_path, **kw):
    base = dict(scale="tiny", policies="freeze_llm,lora,full_ft", batch_sizes="1,2", steps=1, new_tokens=3,
                gen_batch=2, grad_ckpt=False, docs=str(tmp_path / "vlm.md"), cache_dir=str(tmp_path / "cache"))
    return argparse.Namespace(**{**base, **kw})


def test_real_size_tiny_table(tmp_path):
    (tmp_path / "vlm.md").write_text("# vlm bench\n\n## data set build memory\n\nkept\n")
    text = bench.real_size(_args(tmp_path), "python -m vlm.bench --real-size --scale tiny", fresh_process=False)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| policy | batch"))
    end = lines.index("", start)
    rows = [line.split("|")[1:-1] for line in lines[start + 2:end]]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        (p, b) for p in ("freeze_llm", "lora", "full_ft") for b in ("1", "2")]
    assert len(lines[start].split("|")) - 2 == 8 and all(len(r) == 8 for r in rows)
    assert not any("skipped" in c for r in rows for c in r)
    assert "2 x 24 GB GPUs at global batch 24" in text and "ZeRO-2" in text
    assert "with KV cache | without KV cache" in text and "captions/s" in text
    doc = (tmp_path / "vlm.md").read_text()
    assert "## data set build memory\n\nkept" in doc and doc.count("## Real size (random weights)") == 1
    bench.real_size(_args(tmp_path, policies="freeze_llm", batch_sizes="1", new_tokens=0), "again", fresh_process=False)
    doc = (tmp_path / "vlm.md").read_text()
    assert doc.count("## Real size (random weights)") == 1 and "kept" in doc and "`again`" in doc


def test_trainable_counts_by_policy(tmp_path):
    vision, llm = realsize.ensure_towers("tiny", tmp_path)
    counts = {}
    for pol in ("freeze_llm", "lora", "full_ft"):
        cfg = bench._compose(*realsize.overrides(pol, vision, llm, grad_ckpt=False))
        if pol == "lora":
            assert cfg.model.lora.r == 64 and cfg.model.lora.alpha == 128
        row = realsize.step_row(cfg, pol, batch=1, steps=1)
        assert row["skipped"] is None and row["image_tokens"] == 4
        counts[pol] = (row["trainable"], row["total"])
    assert counts["freeze_llm"][0] < counts["lora"][0] < counts["full_ft"][0]
    # LoRA adds its adapters to the total; freeze_llm and full_ft hold the same weights
    assert counts["freeze_llm"][1] == counts["full_ft"][1] == counts["full_ft"][0] < counts["lora"][1]


def test_fit_arithmetic():
    # 1e9 frozen, 1e8 trainable: 2e9 + 4e8 + 12e8 (DDP) / + 6e8 (ZeRO-2 over 2)
    f = realsize.fit(10**9, 10**8, act=2**30, gpus=2, gpu_gb=24, global_batch=24)
    assert abs(f["ddp_static_gb"] - 3.6e9 / 2**30) < 1e-9 and abs(f["zero2_static_gb"] - 3.0e9 / 2**30) < 1e-9
    assert f["ddp_micro"] == 12 and f["per_gpu"] == 12
    big = realsize.fit(0, 3 * 10**9, act=None)  # full FT of 3B: 48 GB of state, 30 GB a GPU with ZeRO-2
    assert big["ddp_micro"] == 0 and big["zero2_micro"] == 0
    assert realsize.fit(10**9, 10**8, act=None)["ddp_micro"] is None  # fits statically, activations unknown
    rows = [{"policy": "p", "batch": 1, "skipped": None, "peak_rss_mb": 1000.0},
            {"policy": "p", "batch": 3, "skipped": None, "peak_rss_mb": 1400.0}]
    assert realsize.activation_per_sample(rows, "p") == 200 * 2**20
    assert realsize.activation_per_sample(rows[:1], "p") is None
