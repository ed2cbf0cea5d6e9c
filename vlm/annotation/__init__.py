"""Teacher annotation: ask a VLM behind an OpenAI-compatible endpoint about a labelled image set.

``python -m vlm.annotate +annotate=<name>`` runs it (see :mod:`vlm.annotate`). The pieces:
:mod:`.dataset` (the labelled items), :mod:`.classes` (class definitions and the brand-metric matcher),
:mod:`.prompts` (the three prompt modes), :mod:`.client` (the `openai` client, its timeouts and retries), :mod:`.cache` (the resumable
JSONL cache), :mod:`vlm.caption_clean` (answer cleaning, shared with the training data), :mod:`.analysis` (agreement, suspected label errors, the
corrected training set) and :mod:`.report` (Markdown + self-contained HTML).
"""
