"""batchgen: a batch runner for AI video generation."""

__version__ = "0.1.0"
