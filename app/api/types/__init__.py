"""Strawberry object types mirroring the stored documents."""
