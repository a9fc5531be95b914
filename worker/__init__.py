"""The worker: claims requested jobs, runs their handlers, appends the outcome."""
