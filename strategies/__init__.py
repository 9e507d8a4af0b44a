"""Flower strategies of the project."""

from strategies.coopt import CoOptStrategy, NodeRecord, RunResult

__all__ = ["CoOptStrategy", "NodeRecord", "RunResult"]
