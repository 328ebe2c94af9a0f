"""Config: schemas, Hydra composition, canonical hashing and diffs."""
