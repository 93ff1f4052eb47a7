"""deit-bench: measure DeiT models (size, speed; accuracy next) and write one result record per run."""
