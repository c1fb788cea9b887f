"""Protocol-faithful doubles of the services imagen talks to, for tests and the demo."""
