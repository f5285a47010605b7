"""A trained model packaged to leave the project: the export folder (weights as safetensors,
config.json, tokenizer files) and its model card."""
