"""stac-runtime: the camera-side loop (numpy, OpenCV, onnxruntime, tritonclient; never torch)."""
