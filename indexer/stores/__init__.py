"""Stores keep encoded passages and answer searches; every backend satisfies :class:`Store`."""

from .base import SearchRequest, Store, StoreCounts, WriteOutcome

__all__ = ["SearchRequest", "Store", "StoreCounts", "WriteOutcome"]
