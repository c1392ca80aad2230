"""The layers of DESIGN.md section 2, enforced: the API process never imports torch, ``models``,
``training``, ``zoo`` or anything of ``workers``; ``core`` is torch-free and imports none of the
packages above it; only ``core.redis_model`` names loravet's Redis keys; benchmarks import nothing
from ``tests``."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UPPER = ("torch", "models", "training", "zoo", "workers", "service", "benchmarks", "tests")


def _loaded_after(code: str, tmp_path: Path) -> list[str]:
    probe = code + (
        "\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {set(UPPER)!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "store")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_service_never_imports_torch_nor_workers(tmp_path: Path) -> None:
    loaded = _loaded_after(
        "import sys\n"
        "import service.main, service.api_cli\n"
        "from service.settings import ApiSettings\n"
        "app = service.main.create_app(ApiSettings(keys=['k3y-for-tests-0123456789abcdef-one'], "
        "redis_url='redis://127.0.0.1:1/0', storage_dir=sys.argv[1]))",
        tmp_path,
    )
    assert [m for m in loaded if m.split(".")[0] != "service"] == []


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_api_on_either_store_stays_torch_free_and_loads_boto3_only_for_s3(
    tmp_path: Path, backend: str
) -> None:
    """The S3 store (boto3) is loaded only where it is selected, and never brings torch."""
    s3 = ", store_backend='s3', s3_bucket='loravet', s3_endpoint_url='http://127.0.0.1:1'"
    probe = (
        "import json, sys\n"
        "import service.main\n"
        "from service.settings import ApiSettings\n"
        "app = service.main.create_app(ApiSettings(keys=['k3y-for-tests-0123456789abcdef-one'], "
        f"redis_url='redis://127.0.0.1:1/0', storage_dir=sys.argv[1]{s3 if backend == 's3' else ''}))\n"
        f"print(json.dumps([m for m in sys.modules if m.split('.')[0] in {set(UPPER) | {'boto3'}!r}]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "store")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert [m for m in loaded if m.split(".")[0] not in ("service", "boto3")] == []
    assert ("boto3" in loaded) == (backend == "s3")


def test_core_is_torch_free_and_imports_no_upper_layer(tmp_path: Path) -> None:
    modules = sorted(p.stem for p in (ROOT / "core").glob("*.py") if p.stem != "__init__")
    assert {"contracts", "redis_model", "content_store", "webhook_security", "provenance"} <= set(
        modules
    )
    loaded = _loaded_after("".join(f"import core.{m}\n" for m in modules), tmp_path)
    assert loaded == []


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("benchmarks", ("tests",)),
        ("harness", ("tests", "benchmarks")),
        ("service", ("workers", "models", "training", "zoo", "torch")),
        ("core", UPPER),
        ("service/web", ("service.routes",)),  # pages use the service layer, not route functions
    ],
)
def test_no_module_imports_across_a_boundary(folder: str, forbidden: tuple[str, ...]) -> None:
    """Static, so an import inside a function (not run by the probes above) is caught too."""
    crossing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / folder).rglob("*.py")
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    }
    assert crossing == set()


def test_only_the_redis_model_names_loravet_keys() -> None:
    owners = {
        str(path.relative_to(ROOT))
        for folder in ("core", "service", "workers", "benchmarks", "tests")
        for path in (ROOT / folder).rglob("*.py")
        if path != Path(__file__).resolve()
        and ("RedisKeys" in path.read_text() or '"loravet:' in path.read_text())
    }
    assert owners == {"core/redis_model.py"}
