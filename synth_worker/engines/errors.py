"""What an engine raises. Imports nothing, so an engine module and its callers can share them freely.

How the worker treats each: EngineInputError (and ProfileRejected) fails the task for good; any
other EngineError is transient and the job is retried. EngineUnavailable comes from loading an
engine (`registry.load_engine`): the worker does not start.
"""

from __future__ import annotations


class EngineError(Exception):
    """Synthesis failed."""


class EngineInputError(EngineError):
    """This input can never succeed (a poison job): fail the task, do not retry it."""


class ProfileRejected(EngineInputError):
    """The speaker profile passed in is unusable (corrupt, or from another analysis): analyse again."""


class EngineUnavailable(EngineError):
    """The engine cannot start: a library or model is missing or broken."""
