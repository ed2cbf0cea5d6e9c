"""``python -m textcls.predict ckpt=PATH input=FILE output=OUT.jsonl``: tag texts with a saved checkpoint
(or a combination: ``ckpt=[a,b] combine=intersection``). Input: a text file (one text per line) or JSONL with
``text`` / ``doc_token``; output: JSONL ``{"text", "labels", "scores"}``, written atomically."""

from __future__ import annotations

from omegaconf import ListConfig

from common import entry, io
from textcls.inference import combine, load_checkpoint, read_texts
from textcls.report import prediction_rows


def predict(cfg) -> None:
    docs = read_texts(cfg.input)  # the cheap checks first: no model is loaded for a bad input or output path
    paths = list(cfg.ckpt) if isinstance(cfg.ckpt, ListConfig | list) else [cfg.ckpt]
    io.check_writable(cfg.output, "output", {"input": cfg.input, **{f"ckpt[{i}]": p for i, p in enumerate(paths)}})
    models = [load_checkpoint(p, f"ckpt[{i}]" if len(paths) > 1 else "ckpt") for i, p in enumerate(paths)]
    space, probs, pred, _ = combine(models, docs, cfg.combine, cfg.batch_size, labelled=False)
    io.write_jsonl(cfg.output, prediction_rows(docs, probs, pred, space))
    print(f"{len(docs)} predictions -> {cfg.output}")


@entry.main("textcls", config_name="predict", config_path="pkg://conf.textcls.infer")
def main(cfg):
    return predict(cfg)


if __name__ == "__main__":
    main()
