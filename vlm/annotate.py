"""``python -m vlm.annotate +annotate=<name>``: a teacher VLM annotates a labelled image set in several prompt
modes; outputs the annotated JSONL per mode, a per-class error-analysis report, a corrected training set and
a suspected-label-error list (see :mod:`vlm.annotation`).

    python -m vlm.serve port=8000 &                       # or any OpenAI-compatible endpoint (vLLM, ...)
    python -m vlm.annotate +annotate=synthetic            # the embedded synthetic brand set, three modes
    python -m vlm.annotate +annotate=synthetic endpoint.base_url=http://gpu-box:8000/v1 endpoint.model=Qwen2-VL-72B
    python -m vlm.annotate +annotate=captions data.path=logs/vlm.ingest/mytheresa/records.jsonl captions.min_brand_samples=100

``+annotate=captions`` (``task: captions``) is the teacher-caption pipeline instead: brand-aware captions of
``vlm.ingest``'s records, cleaned in tokens, brand-checked and brand-filtered into a training set (see
:mod:`vlm.annotation.captions`).

Re-running the same command resumes: finished requests are read from ``<out_dir>/cache/``.
"""

from common import entry
from common.errors import ConfigError


@entry.main("vlm", config_name="annotate")
def main(cfg):
    if cfg.task == "classes":
        from vlm.annotation.runner import run

        run(cfg)
    elif cfg.task == "captions":
        from vlm.annotation.captions import run_captions

        run_captions(cfg)
    else:
        raise ConfigError(f"task: expected classes or captions, got {cfg.task!r}")


if __name__ == "__main__":
    main()
