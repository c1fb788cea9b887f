"""The shell that performs actions: the runner loop and its effects (HTTP, websocket, image
checks, atomic files, liveness, signals and crash points), with an injectable Environment.
"""
