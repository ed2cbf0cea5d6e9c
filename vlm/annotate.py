"""``python -m vlm.annotate +annotate=<name>``: a teacher VLM annotates a labelled image set in several prompt
modes; outputs the annotated JSONL per mode, a per-class error-analysis report, a corrected training set and
a suspected-label-error list (see :mod:`vlm.annotation`).

    python -m vlm.serve port=8000 &                       # or any OpenAI-compatible endpoint (vLLM, ...)
    python -m vlm.annotate +annotate=synthetic            # the embedded synthetic brand set, three modes
    python -m vlm.annotate +annotate=synthetic endpoint.base_url=http://gpu-box:8000/v1 endpoint.model=Qwen2-VL-72B

Re-running the same command resumes: finished requests are read from ``<out_dir>/cache/``.
"""

from common import entry
from vlm.annotation.runner import run


@entry.main("vlm", config_name="annotate")
def main(cfg):
    run(cfg)


if __name__ == "__main__":
    main()
