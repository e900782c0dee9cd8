#!/usr/bin/env bash
# The main job end to end on the embedded default, on a fresh machine: install, build the model
# repository (export, validate, calibrate), start a local Triton server, run stac-runtime against it over
# gRPC on the carphone clip in real time over an LTE-like link (stac/link.py: the real edge answers, the link
# model decides when each answer reaches the device), print the report, write demo_out/overlay.mp4, stop the
# server. Ports: STAC_HTTP_PORT, STAC_GRPC_PORT, STAC_METRICS_PORT (default 8000-8002).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
http=${STAC_HTTP_PORT:-8000} grpc=${STAC_GRPC_PORT:-8001} metrics=${STAC_METRICS_PORT:-8002}

.venv/bin/python export/build.py --model selfie --out triton_models
.venv/bin/stac-edge serve --repo triton_models --http-port "$http" --grpc-port "$grpc" --metrics-port "$metrics" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
.venv/bin/stac-edge check "grpc://127.0.0.1:$grpc" --tables triton_models/tables.json --wait 180
.venv/bin/stac-runtime run carphone --edge "grpc://127.0.0.1:$grpc" --tables triton_models/tables.json \
    --onnx-dir triton_models_onnx --reference model --link lte --out demo_out --report demo_out/report.json
echo "overlay video: demo_out/overlay.mp4, masks: demo_out/masks/, report: demo_out/report.json"
