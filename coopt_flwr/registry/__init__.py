"""Registries chosen by name from config: prior models and data sets, with their spec syntax.

Public entry points live in the submodules (importing a submodule does not pull in the others'
heavy dependencies): :mod:`.spec` (``parse_spec``, ``Spec``, ``SpecSchema``, ``Option``),
:mod:`.registry` (``Registry``, ``UnknownNameError``), :mod:`.prior_options` (the built-in
priors' option schemas and ``check_prior_spec``, without torch), :mod:`.priors` (``create_prior``,
``check_prior``, ``register_prior``, ``list_priors``, ``clear_prior_cache``) and :mod:`.datasets`
(``create_dataset``, ``register_dataset``, ``list_datasets``, ``clear_dataset_cache``,
``shard_split``, ``shared_subset``, ``ImageData``).
"""
