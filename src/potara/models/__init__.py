"""Base models with LoRA through PEFT, the offline digits ViT, and adapter state in and out of a model."""
