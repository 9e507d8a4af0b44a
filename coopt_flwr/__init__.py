"""CoOpt: collaborative unlabeled data optimization on Flower.

The pure mathematics lives in :mod:`coopt_flwr.protocol.projection`, :mod:`coopt_flwr.protocol.uniformity`,
:mod:`coopt_flwr.protocol.alignment` and :mod:`coopt_flwr.protocol.inconsistency`; the registries in
:mod:`coopt_flwr.registry.priors` and :mod:`coopt_flwr.registry.datasets`; the Flower apps in
:mod:`coopt_flwr.server_app` and :mod:`coopt_flwr.client_app`.
"""

__version__ = "0.1.0"
