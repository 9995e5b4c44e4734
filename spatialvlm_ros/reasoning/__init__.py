"""Chain-of-thought spatial reasoning: composite questions broken into atomic spatial queries.

* :mod:`~spatialvlm_ros.reasoning.tools`: the atomic queries (distance, gap, left/right, above/below,
  in front/behind, height, width, the objects), answered by the configured estimator or a spatial VLM;
* :mod:`~spatialvlm_ros.reasoning.planner`: the deterministic planner for the common composite questions;
* :mod:`~spatialvlm_ros.reasoning.llm`: a language model behind an OpenAI-compatible API that decides
  which queries to make (tool calling, or plain JSON for servers without it).
"""
