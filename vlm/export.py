"""``python -m vlm.export ckpt=<run dir | .ckpt file | captioner dir> out=DIR``: a trained captioner as a plain
transformers VLM (LoRA merged), loadable with ``AutoModelForImageTextToText.from_pretrained(DIR)`` +
``AutoProcessor.from_pretrained(DIR)`` and no code of this repository (vLLM, pipelines, any transformers tool).

    python -m vlm.export ckpt=logs/vlm.train/runs/<time> out=exports/captioner
    python -m vlm.export ckpt=.../checkpoints/epoch_004.ckpt out=DIR overwrite=true
    python -m vlm.export ckpt=... out=DIR check_jsonl=data/test.jsonl   # and compare greedy tokens both ways

The layout follows the composition (``vlm.exporting.layout``): InternVL-hf for the ``mlp2x_gelu`` projector (its
pixel shuffle as ``downsample_ratio``), LLaVA for ``linear`` without pixel shuffle; what has no standard equivalent
is one ``error:`` line naming it, exit 2. ``out`` is refused when it is (or holds) an input, or is not empty
without ``overwrite=true``. Every key: ``vlm.schemas.ExportSchema``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from common import entry
from common.data.records import read_jsonl, require_text
from common.errors import ConfigError

log = logging.getLogger(__name__)


def model_kind(model_cfg) -> str:
    """``composed`` (vision tower + projector + LLM, this repository's) or ``hf_vlm`` (an off-the-shelf VLM)."""
    model_cfg = model_cfg or {}
    return str(model_cfg.get("kind") or ("composed" if "vision" in model_cfg and "llm" in model_cfg else "hf_vlm"))


def _kind_of(ckpt: Path) -> str:
    from vlm.captioner import EXPORT_FILE

    if ckpt.is_dir() and (ckpt / EXPORT_FILE).is_file():
        return model_kind(json.loads((ckpt / EXPORT_FILE).read_text()).get("model"))
    run = ckpt.parent.parent if ckpt.is_file() else ckpt
    f = run / ".hydra" / "config.yaml"
    return model_kind(OmegaConf.load(f).get("model")) if f.is_file() else "composed"


def _check_images(path: str, limit: int) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"check_jsonl: no such file {path}")
    rows = read_jsonl(path, lambda raw: require_text(raw.get("image"), "image"))
    return [str(p if Path(p).is_absolute() else path.parent / p) for p in rows[:limit]]


def run(cfg) -> dict:
    from vlm.exporting import roundtrip
    from vlm.exporting.source import resolve
    from vlm.exporting.writer import check_out, dtype_of, export

    dtype_of(cfg.dtype)
    ckpt = Path(str(cfg.ckpt))
    inputs = {"ckpt": ckpt, "ckpt (its run dir)": ckpt.parent.parent if ckpt.suffix == ".ckpt" else ckpt}
    if cfg.check_jsonl:
        inputs["check_jsonl"] = Path(cfg.check_jsonl)
    check_out(cfg.out, inputs, cfg.overwrite)
    from vlm.eval import checkpoints

    cap, read = resolve(str(ckpt), checkpoints)  # a model=hf_vlm run's captioner is an HfCaptioner
    if _kind_of(ckpt) == "hf_vlm":
        return _export_hf_vlm(cfg, cap, inputs | {f"ckpt (read from {p})": p for p in read})
    inputs |= {f"ckpt (read from {p})": p for p in read}
    info_model = cap.info.get("model") or {}
    for key, value in (("model.llm.name_or_path", info_model.get("llm", {}).get("name_or_path")),
                       ("model.vision.name_or_path", info_model.get("vision", {}).get("name_or_path"))):
        if value:
            inputs[key] = Path(value)
    check_out(cfg.out, inputs, cfg.overwrite)
    images = _check_images(cfg.check_jsonl, cfg.check_limit) if cfg.check_jsonl else []
    prompt = cap.default_prompt
    ref = roundtrip.reference(cap, images, prompt, cfg.max_new_tokens) if images else []
    layout = export(cap, cfg.out, cfg.dtype, source=str(ckpt), overwrite=cfg.overwrite)
    print(f"wrote {layout.cls_name} to {cfg.out}")
    result = {"class": layout.cls_name}
    if images:
        got = roundtrip.exported(cfg.out, images, prompt, cfg.max_new_tokens)
        same = roundtrip.agreement(images, ref, got)
        (Path(cfg.out) / "roundtrip.json").write_text(json.dumps(same, indent=1))
        mean = sum(map(len, ref)) / max(1, len(ref))
        print(f"export round trip: {same['same']}/{same['n']} images same greedy tokens ({mean:.1f} new tokens "
              f"a caption, {len({tuple(r) for r in ref})} distinct captions)")
        if same["mismatches"]:
            p, a, b = same["mismatches"][0]
            raise RuntimeError(f"export round trip: {len(same['mismatches'])} images differ, e.g. {p}: {a} vs {b}")
        result["roundtrip"] = same
    return result


def _export_hf_vlm(cfg, cap, inputs: dict) -> dict:
    """A ``model=hf_vlm`` run: its own transformers class and processor, LoRA merged (``HfVLM.save_pretrained``),
    in the dtype the base VLM was loaded in; the round trip as for the composed captioner."""
    from vlm.exporting import roundtrip
    from vlm.exporting.writer import check_out, replace_dir

    base = (cap.info.get("model") or {}).get("name_or_path")
    if base:
        inputs["model.name_or_path"] = Path(base)
    check_out(cfg.out, inputs, cfg.overwrite)
    if cfg.dtype != "fp32":
        raise ConfigError(f"dtype: a model=hf_vlm export keeps the dtype its base VLM was loaded in (model.dtype); "
                          f"got dtype={cfg.dtype}, leave it fp32")
    images = _check_images(cfg.check_jsonl, cfg.check_limit) if cfg.check_jsonl else []
    prompt = cap.default_prompt
    ref = cap.generate_ids(images, prompt, max_new_tokens=cfg.max_new_tokens) if images else []
    replace_dir(cfg.out, cap.save_pretrained)
    name = type(cap.vlm.hf).__name__  # LoRA layers sit inside it; the saved copy has them merged
    print(f"wrote {name} to {cfg.out}")
    result = {"class": name}
    if images:
        got = roundtrip.exported(cfg.out, images, prompt, cfg.max_new_tokens)
        same = roundtrip.agreement(images, ref, got)
        (Path(cfg.out) / "roundtrip.json").write_text(json.dumps(same, indent=1))
        print(f"export round trip: {same['same']}/{same['n']} images same greedy tokens")
        if same["mismatches"]:
            p, a, b = same["mismatches"][0]
            raise RuntimeError(f"export round trip: {len(same['mismatches'])} images differ, e.g. {p}: {a} vs {b}")
        result["roundtrip"] = same
    return result


@entry.main("vlm", config_name="export")
def main(cfg):
    run(cfg)


if __name__ == "__main__":
    main()
