"""``python -m textcls.eval ckpt=PATH data=FILE``: evaluate a saved checkpoint (or an ensemble:
``ckpt=[a.ckpt,b.ckpt] combine=intersection``) on a labelled file in a supported format (NeuralClassifier
JSONL or Toutiao ``_!_``). Prints the per-label table and the NeuralClassifier line; writes report,
plots and predictions to the run dir and MLflow."""

from __future__ import annotations

from pathlib import Path

from omegaconf import ListConfig

from common import entry, eval_cli
from common.metrics.classification import markdown_table
from textcls.inference import combine, load_checkpoint, read_eval_file
from textcls.report import write_evaluation


def evaluate(cfg) -> float:
    paths = list(cfg.ckpt) if isinstance(cfg.ckpt, ListConfig | list) else [cfg.ckpt]
    models = [load_checkpoint(p, f"ckpt[{i}]" if len(paths) > 1 else "ckpt") for i, p in enumerate(paths)]
    docs = read_eval_file(cfg.data, models[0], cfg.format, cfg.on_bad_record)
    space, probs, pred, targets = combine(models, docs, cfg.combine, cfg.batch_size)
    out = Path(cfg.paths.output_dir)
    with eval_cli.tracked_run(cfg, tags={"eval_data": str(cfg.data)}, log_config=True) as loggers:
        result = write_evaluation(out, docs, targets, probs, pred, space, loggers, title=f"{cfg.data}")
        for lg in loggers:
            lg.log_metrics({f"eval/{k}": v for k, v in result.items() if isinstance(v, float)})
    print(markdown_table(result["per_label"]))
    print(result["line"])
    return result["micro_f1"]


@entry.main("textcls", config_name="eval", config_path="pkg://conf.textcls.infer")
def main(cfg):
    return evaluate(cfg)


if __name__ == "__main__":
    main()
