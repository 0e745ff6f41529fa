"""python -m worker: one RQ worker on the permits queue."""

from shared.config import Settings
from shared.logging import configure_logging
from worker.runner import run_worker

if __name__ == "__main__":
    settings = Settings.from_env()
    configure_logging(settings)
    run_worker(settings)
