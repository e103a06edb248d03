"""TensorRT engines from an ONNX export, with TensorRT's documented Python API (optional extra).

Networks are built strongly typed (TensorRT 10's STRONGLY_TYPED flag; the only mode of 11): the
ONNX's types are the engine's precisions, so an FP16 engine comes from `ochre export --dtype fp16`,
not from a builder flag. TensorRT fuses conv + activation and the pointwise chains itself.
Engines are specific to the GPU and TensorRT version that built them: DIR/tensorrt/ records both.
"""

from __future__ import annotations

import json
from pathlib import Path

from ochre.export.onnx import GRAPHS, read_manifest
from ochre.io import write_bytes_atomic, write_json_atomic

WORKSPACE_BYTES = 1 << 30


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeError("TensorRT is not installed: pip install 'ochre[tensorrt]' (needs an NVIDIA GPU)") from e
    return trt


def build_engine(onnx_path: Path, engine_path: Path, log=print) -> Path:
    """Parse one ONNX file and serialise its engine to engine_path."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):          # reads the .onnx.data beside it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
    write_bytes_atomic(engine_path, bytes(serialized))
    log(f"built {engine_path}")
    return engine_path


def build_engines(onnx_dir, log=print) -> dict[str, Path]:
    """DIR/tensorrt/{encode,step,decode}.engine from a checked ONNX export in DIR."""
    trt = import_tensorrt()
    import torch

    onnx_dir = Path(onnx_dir)
    manifest = read_manifest(onnx_dir)
    if not torch.cuda.is_available():
        raise RuntimeError("building TensorRT engines needs an NVIDIA GPU; torch sees none")
    out = onnx_dir / "tensorrt"
    engines = {name: build_engine(onnx_dir / f"{name}.onnx", out / f"{name}.engine", log) for name in GRAPHS}
    write_json_atomic(out / "engines.json", {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(),
                                             "dtype": manifest["dtype"], "batch": manifest["batch"]})
    return engines


def engine_info(onnx_dir) -> dict:
    path = Path(onnx_dir) / "tensorrt" / "engines.json"
    if not path.is_file():
        raise FileNotFoundError(f"{onnx_dir}: no TensorRT engines; build them with "
                                f"`ochre export CKPT --out {onnx_dir} --format tensorrt`")
    return json.loads(path.read_text())
