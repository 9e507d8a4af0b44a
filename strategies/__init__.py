"""Flower strategies of the project."""

from strategies.coopt import CoOptStrategy
from strategies.records import NodeRecord, RunResult, Status

__all__ = ["CoOptStrategy", "NodeRecord", "RunResult", "Status"]
