"""Hydra configs, shipped as a package so entry points find them as ``pkg://conf.<package>``."""
