"""Label propagation for videos: the core (:mod:`.core`: ``Propagator``, ``propagate_video``), the
transfer of a label to another frame (:mod:`.transfer`), the photometric refinement (:mod:`.refine`),
the readers of the tool's inputs (:mod:`.inputs`), overlays (:mod:`.overlays`) and the
``handprop propagate`` command (:mod:`.cli`).

Nothing is imported here, so that importing one part does not import the others.
"""
