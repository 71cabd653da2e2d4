"""``python -m tron_pipelines.cli`` / ``accelerate launch -m tron_pipelines.cli``: the ``tron`` command."""

from .commands.tron_cli import main


if __name__ == "__main__":
    raise SystemExit(main())
