"""Training (Lightning): settings, the module, data, callbacks, checkpoints, fine-tuning and the run wiring."""
