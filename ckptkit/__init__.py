"""ckptkit: inspect, validate and convert LLM checkpoints."""
__version__ = "0.1.0"
