"""Registries chosen by name from config: prior models and data sets, with their spec syntax.

Public entry points live in the submodules (importing a submodule does not pull in the others'
heavy dependencies): :mod:`.spec` (``parse_spec``, ``Spec``), :mod:`.registry` (``Registry``,
``UnknownNameError``), :mod:`.priors` (``create_prior``, ``register_prior``, ``list_priors``,
``clear_prior_cache``) and :mod:`.datasets` (``create_dataset``, ``register_dataset``,
``list_datasets``, ``clear_dataset_cache``, ``shard_split``, ``shared_subset``, ``ImageData``).
"""
