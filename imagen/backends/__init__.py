"""Backend adapters: pure state machines that decide the next action from a job's state."""
