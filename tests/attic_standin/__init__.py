"""An Attic server stand-in over real HTTP (see server.py)."""
