"""stac-edge: run the Triton edge locally and check any edge."""
