"""The shell that performs actions: the runner loop and its effects (HTTP, websocket, image
checks, atomic files, claims, signals and crash points), with an injectable Environment. What
it needs of the application (the caller's budgets, who holds a remote id) it is handed
(admission.py): it imports no projection and nothing from app/ or cli/ (tests/test_floors.py).
"""
