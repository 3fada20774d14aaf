"""The HTTP surface: dialect edges, admin endpoints and the app that owns every resource."""

from tiergate.api.app import create_app

__all__ = ["create_app"]
