"""`stac-export` (build.py): the model repository the edge serves."""
