"""The captioner behind the OpenAI chat-completions API (``python -m vlm.serve`` is the command line).

:mod:`.schemas` (pydantic request / response / chunk / error models), :mod:`.images` (image URLs -> pixels,
bounded), :mod:`.backends` (the captioner, an echo backend, usage counting), :mod:`.batcher` (dynamic
batching), :mod:`.app` (the FastAPI app).
"""
