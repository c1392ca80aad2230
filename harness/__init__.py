"""harness: what tests, benchmarks and ``loravet serve`` share to build inputs and run the real stack.

``lora_files`` (safetensors and PEFT/kohya/diffusers LoRA builders), ``hostile_files`` (the catalogue
of malformed and hostile files), ``embedded_redis`` (a real Redis server on loopback), ``stack`` (the
stack as processes: Redis, ``loravet api``, ``loravet worker``; used by ``loravet serve``, the
reliability suite and the browser tests), ``inprocess`` (the API under uvicorn in a thread and burst
workers in this process, for the service tests) and ``client`` (upload, wait for a job). Nothing here
is a mock. ``tests`` and ``benchmarks`` import from here, never from each other.
"""
