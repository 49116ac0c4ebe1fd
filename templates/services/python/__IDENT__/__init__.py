"""The __NAME__ service."""
