"""The web service of nerindex (the [web] extra): JSON API, Elastic Search UI endpoints, search page."""

from .app import Limits, create_app

__all__ = ["Limits", "create_app"]
