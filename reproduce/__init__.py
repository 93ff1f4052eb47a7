"""deit-bench's training side: the config, the paper's experiments, the training loop, distillation, suites."""
