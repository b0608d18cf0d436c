"""The execution engine: runs, their lifecycle, progress and persistence."""

from fxbatch.engine.core import Engine, Job, Progress

__all__ = ["Engine", "Job", "Progress"]
