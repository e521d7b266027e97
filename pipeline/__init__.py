"""RRL feature-caching pipeline: render, encode, cache, and learn Adroit tasks from frozen features."""

__version__ = "0.1.0"
