"""The HTTP service, the command line and the wiring of store, projections and worker."""
