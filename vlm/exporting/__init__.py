"""Export of a trained composed captioner as a plain transformers VLM (``python -m vlm.export``).

* :mod:`vlm.exporting.source`: a ``ckpt=`` value (checkpoint file, run dir, captioner export) -> a Captioner;
* :mod:`vlm.exporting.layout`: which standard class can host it (LLaVA, InternVL-hf) and its config + weights;
* :mod:`vlm.exporting.processor`: the matching ``AutoProcessor`` (image processor, chat template, image token);
* :mod:`vlm.exporting.writer`: the export folder itself;
* :mod:`vlm.exporting.roundtrip`: greedy tokens of the plain transformers load vs the captioner's own.
"""
