"""Training pipelines of the spatial VLMs, on the data engine's datasets (``spatialvlm synthesize``).

* :mod:`~spatialvlm_ros.training.compact`: the compact in-house model (:mod:`spatialvlm_ros.vlm.compact`)
  from scratch (``spatialvlm train``);
* :mod:`~spatialvlm_ros.training.merge`: a weight-space average of compact checkpoints of one lineage
  (``spatialvlm merge``);
* :mod:`~spatialvlm_ros.training.lora`: a LoRA adapter for a transformers VLM (``spatialvlm finetune``),
  served by the ``transformers`` VLM backend.
"""
