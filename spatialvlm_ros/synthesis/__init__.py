"""The SpatialVLM data engine: images -> 3D scene records -> spatial VQA rows with metric truth.

Flow, one image at a time (each stage one module):

1. :mod:`~spatialvlm_ros.synthesis.sources`: samples (``sim:N`` today);
2. :mod:`~spatialvlm_ros.synthesis.extract`: filter, objects expert, depth, then
   :mod:`~spatialvlm_ros.synthesis.lifting` (clouds, DBSCAN, canonical frame from support pixels, 3D
   boxes) and :mod:`~spatialvlm_ros.synthesis.ambiguity` (background out, near-duplicates told apart);
3. :mod:`~spatialvlm_ros.synthesis.questions`: the 43 question types, phrased from
   :mod:`~spatialvlm_ros.vlm.templates`, rounded by :mod:`~spatialvlm_ros.synthesis.rounding`;
4. :mod:`~spatialvlm_ros.synthesis.writer`: the streaming, resumable dataset folder;
   :mod:`~spatialvlm_ros.synthesis.engine` drives it, :mod:`~spatialvlm_ros.cli.synthesize` is the door.

Where the transformers experts plug in (a class implementing the Protocol, registered by name in
:mod:`~spatialvlm_ros.synthesis.registry`, selected in ``config/synthesis.yaml`` under ``experts``):
a CLIP zero-shot image filter in ``FILTERS``; OWLv2 / Grounding DINO + SAM + a region captioner (and
the floor / table segmentation) in ``OBJECT_EXPERTS``; Depth Anything / ZoeDepth metric depth with a
field-of-view estimate in ``DEPTH_SOURCES``; the CLIP text tower in ``EMBEDDERS``. Nothing else changes.
"""
