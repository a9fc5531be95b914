"""The worker: claims requested jobs, runs their handlers, appends the outcome."""

from worker.handlers import Fail, Handlers, JobContext, JobError, Retry, load_handlers

__all__ = ["Fail", "Handlers", "JobContext", "JobError", "Retry", "load_handlers"]
