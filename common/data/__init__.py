"""Data utilities shared by the task packages: validating readers, splits, vocabularies, samplers, images."""
