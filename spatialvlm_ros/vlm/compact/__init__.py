"""A compact in-house spatial VLM: a few million parameters, trained on the data engine's VQA, run on a CPU.

* :mod:`~spatialvlm_ros.vlm.compact.tokenizer`: the word-level tokenizer, number and reference placeholders;
* :mod:`~spatialvlm_ros.vlm.compact.network`: the torch model, its config, weights I/O (safetensors);
* :mod:`~spatialvlm_ros.vlm.compact.backend`: the VLM backend ``"compact"`` (imports torch; imported by
  :func:`~spatialvlm_ros.vlm.base.build_vlm` only when asked for).

It is trained by :mod:`spatialvlm_ros.training.compact` (``spatialvlm train``); the trained weights ship in
``spatialvlm_ros/vlm/weights/``.
"""

#: The files of a weights folder (written by network.save_weights; light to import, unlike network).
WEIGHTS_FILE, MODEL_CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "model_config.json", "tokenizer.json"
