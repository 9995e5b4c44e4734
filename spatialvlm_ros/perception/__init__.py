"""Perception experts behind small interfaces: grounding (text phrase -> pixel mask)."""

from spatialvlm_ros.perception.grounding import Grounder, build_grounder, register_grounder

__all__ = ["Grounder", "build_grounder", "register_grounder"]
