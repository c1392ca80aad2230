"""Reliability, security and load suite: measured figures for what loravet survives.

    python -m benchmarks.reliability --quick     # ~2 min: also what tests/reliability runs
    python -m benchmarks.reliability --full      # 15-25 min on 2 cores: the figures of docs/reliability.md

Parts (each against the real stack on loopback: embedded Redis, the API under uvicorn, resident
worker processes): ``bad_input`` (hostile catalogue + mutants through the API), ``fuzz`` (atheris on
the header parser and reader), ``conformance`` (schemathesis on the served OpenAPI), ``load``
(concurrent uploads up to a full SD 1.5 rank-128 LoRA, floors, backpressure), ``faults`` (worker
SIGKILL, Redis restarts, webhook receiver outage) and ``security`` (auth on every route, keys in
logs, pickles, filenames, callback addresses). Results go to ``benchmarks/results/reliability/``.
"""
