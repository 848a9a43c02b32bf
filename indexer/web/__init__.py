"""The web service of nerindex (the [web] extra): JSON API, Elastic Search UI endpoints, search page."""

from .app import create_app
from .service import Limits

__all__ = ["Limits", "create_app"]
