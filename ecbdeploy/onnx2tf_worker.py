"""Runs onnx2tf in a child process: its logs go to a file, and it cannot reach the network.

Invoked by tflite_export as `python -m ecbdeploy.onnx2tf_worker SPEC.json` with the working
folder as cwd. onnx2tf fetches sample images for 3-channel inputs; here that function is replaced
by one returning our own photographs, and sockets refuse to connect, so nothing is downloaded.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np


def _refuse_network(*args, **kwargs):
    raise OSError("ecbdeploy: network access is disabled during conversion")


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    socket.socket.connect = _refuse_network  # type: ignore[method-assign]
    socket.create_connection = _refuse_network  # type: ignore[assignment]

    import onnx2tf
    import onnx2tf.onnx2tf as onnx2tf_main

    samples = np.load(spec["sample_images"])
    onnx2tf_main.download_test_image_data = lambda: samples

    kwargs = dict(
        input_onnx_file_path=spec["onnx"],
        output_folder_path=spec["output_folder"],
        copy_onnx_input_output_names_to_tflite=True,
        not_use_onnxsim=True,  # ecbdeploy already simplified and checked the graph
        non_verbose=not spec.get("verbose", False),
    )
    if spec.get("dynamic_range"):
        kwargs["output_dynamic_range_quantized_tflite"] = True
    if spec.get("calibration"):
        kwargs.update(
            output_integer_quantized_tflite=True,
            custom_input_op_name_np_data_path=[[spec["input_name"], spec["calibration"], [[[[0.0]]]], [[[[1.0]]]]]],
            input_quant_dtype=spec["io_dtype"],
            output_quant_dtype=spec["io_dtype"],
            quant_type="per-channel",
        )
    onnx2tf.convert(**kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
