"""ONNX export (``trt_build.export``) and TensorRT engine building for the synthesis network."""
