"""Shipped model bundles (governance 7C): manifest, compatibility, verification, atomic install, rollback, update channel."""
