"""The web console at /console: sessions (auth.py); pages, assets, live events (routes.py)."""
