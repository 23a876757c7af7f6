"""The network: backbones, LoRA, self-prompting decoder passes, the loss, and persistence. No file I/O but weights."""
