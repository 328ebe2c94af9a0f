"""Models: walk-forward splits, LightGBM specialists and a global model, their blend, bundles."""
