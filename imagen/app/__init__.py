"""The application layer the CLI calls: configuration, preparing a job, reporting its outcome,
writing sidecars, preview. No cyclopts here, so a script can use imagen as a library.
"""
