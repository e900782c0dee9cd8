"""The edge side: the Triton model repository (writer and python-model adapters) and a local server."""
