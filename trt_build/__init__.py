"""ONNX export and TensorRT engine building for the synthesis network. Built in a later issue."""
