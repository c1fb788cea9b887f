"""`python -m tests.support.imagen_cli ARGS`: the real CLI with the test-only echo adapter
registered (the production registry does not know it)."""

from tests.support.echo_backend import register

register()

from imagen.cli import main  # noqa: E402

main()
