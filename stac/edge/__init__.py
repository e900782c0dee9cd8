"""The edge side: the Triton model repository (writer and python-model adapters), a local server, and the clients
the device and the tools reach an edge with (local or Triton)."""
