"""`stac-bench eval`: the paper's evaluation (Table I, Fig. 5-9) on real video."""
