"""Fine-tuning: the Trainer and its parts (batches with cached encoder prefixes, schedule, checkpoints, history)."""
