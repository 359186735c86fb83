"""PEARL's method core: proximity probes, rank rules (pure functions), per-task PEFT LoRA adapters
and the continual model they act on. Nothing here knows about runs, files or other methods."""
