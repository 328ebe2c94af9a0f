"""Features: a registry of named, point-in-time feature builders; labels kept apart."""
