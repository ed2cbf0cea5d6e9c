"""``python -m textcls.bench`` end to end on a small generated Toutiao file: rows with intervals, the ensemble row,
the ratio lines, and ``--test-file`` scoring every model on another file."""

from __future__ import annotations

import re

from textcls import bench

CAR = ["比亚迪新款轿车正式上市售价公布", "宝马新车谍照曝光内饰升级明显", "丰田混动车型油耗实测结果出炉"]
OTHER = ["国家队公布最新集训名单引热议", "球队主场加时赛险胜卫冕冠军", "联赛积分榜最新排名出炉球迷热议"]
FINANCE = ["央行宣布下调存款准备金率释放资金", "股市今日大涨成交量创新高", "多家银行下调房贷利率刺激需求"]


def _file(path, n: int, seed: int):
    lines = []
    for i in range(n):
        code, name, pool = [("107", "news_car", CAR), ("103", "news_sports", OTHER), ("104", "news_finance", FINANCE)][i % 3]
        lines.append(f"{6500000000000000000 + seed * 10000 + i}_!_{code}_!_{name}_!_{pool[(i // 3) % 3]}第{i}期_!_")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_bench_writes_intervals_ensemble_and_ratio_lines_on_a_separate_test_file(tmp_path):
    train, test = _file(tmp_path / "train.txt", 240, 0), _file(tmp_path / "test.txt", 60, 1)
    out = tmp_path / "bench.md"
    bench.main(["--train-file", str(train), "--test-file", str(test), "--models", "cnn_char,tfidf", "--toutiao-epochs", "2",
                "--skip-synthetic", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    assert f"tested on {test}" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| model")}
    assert set(rows) == {"TextCNN char (7/8/9 x 128)", "TF-IDF char 1-3 + LR", bench.ENSEMBLE}
    for line in rows.values():
        for value, low, high in re.findall(r"([\d.]+) \[([\d.]+), ([\d.]+)\]", line):
            assert float(low) <= float(value) <= float(high)
    # the toy classes are separable by their words: TF-IDF+LR gets every test headline right
    assert re.search(r"\| TF-IDF char 1-3 \+ LR \| 1\.0000 \[1\.0000, 1\.0000\]", text)
    assert "car-vs-other F1, best in-repo neural recipe (TextCNN char (7/8/9 x 128), picked on val) / TF-IDF+LR:" in text
    assert "15-class accuracy, mean(best neural on val, TF-IDF+LR) / TF-IDF+LR:" in text
