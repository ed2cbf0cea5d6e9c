"""What the three task packages share: data readers, metrics, tracking, the run helper, reports.

Nothing in here imports ``vlm``, ``textcls`` or ``retrieval``.
"""
