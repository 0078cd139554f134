"""Label propagation for videos: the core (:mod:`.core`: ``propagate_video``, ``batched``,
``hand_mesh``, ``bound_from_run``), the readers of the tool's inputs (:mod:`.inputs`), overlays
(:mod:`.overlays`) and the ``handprop propagate`` command (:mod:`.cli`).

Nothing is imported here, so that importing one part does not import the others.
"""
