"""The engines that run an exported model on a CPU, and how one is chosen for this machine.

- `export`: a HashtagModel written as an ONNX graph (needs torch; run once, in a child process
  or by `python -m finetune export`).
- `onnx_runtime`, `openvino_runtime`: the graph served by ONNX Runtime (fp32, int8) or by
  OpenVINO (f32, bf16), without torch.
- `derived`: files made once from the graph (an int8 graph, an OpenVINO IR) and where they go.
- `calibration`, `choice`: the photos and the measurement that pick the fastest engine that
  still agrees with fp32 on this CPU, and the cache of that decision.
"""
