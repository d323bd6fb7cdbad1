"""mathsft: compare AdamW, SGD and LoRA supervised fine-tuning of a small LLM on MATH."""

__version__ = "0.1.0"
