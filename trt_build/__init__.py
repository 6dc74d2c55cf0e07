"""Command lines for the synthesis network's deployment formats: ``python -m trt_build.export`` (ONNX)
and ``python -m trt_build.build`` (TensorRT engines). The code they run lives in ``engine.synthesis``
(``onnx_export``, ``trt_engine``, ``trt_backend``); nothing in the engine imports this package."""
