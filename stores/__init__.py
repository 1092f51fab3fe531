"""Persistence only: the lake (DuckLake), the media store, stage staging, exports. Decides nothing."""
