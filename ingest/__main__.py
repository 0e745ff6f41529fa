"""python -m ingest: run the receiver on the environment's settings."""

from ingest.server import serve
from shared.config import Settings
from shared.logging import configure_logging

if __name__ == "__main__":
    settings = Settings.from_env()
    configure_logging(settings)
    serve(settings)
