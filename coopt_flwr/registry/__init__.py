"""Registries chosen by name from config: prior models and data sets, with their spec syntax."""
