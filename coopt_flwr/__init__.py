"""CoOpt: collaborative unlabeled data optimization on Flower.

The pure mathematics lives in :mod:`coopt_flwr.projection`, :mod:`coopt_flwr.uniformity`,
:mod:`coopt_flwr.alignment` and :mod:`coopt_flwr.inconsistency`; the registries in
:mod:`coopt_flwr.priors` and :mod:`coopt_flwr.datasets`; the Flower apps in
:mod:`coopt_flwr.server_app` and :mod:`coopt_flwr.client_app`.
"""

__version__ = "0.1.0"
