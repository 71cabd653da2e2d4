"""``python -m tron_pipelines.train`` / ``accelerate launch -m tron_pipelines.train``: the same as ``tron train-translator``."""

from .training.train import main


if __name__ == "__main__":
    main()
