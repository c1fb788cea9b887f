"""The application layer: the use cases (generate, batch, resume, cancel…) as functions taking
a Session (session.py), and what they share: configuration, preparing a job, its outcome,
sidecars, budgets, preview. No cyclopts here: the CLI and the agent server call the same
functions, and a script can use imagen as a library.
"""
