"""The HTTP API of contract section 6 (FastAPI). ``create_app`` builds it;
``python -m services.http`` serves it with uvicorn."""

from services.http.app import create_app

__all__ = ["create_app"]
