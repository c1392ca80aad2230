"""The API process never imports torch (nor ``models``), and reaches into ``workers`` only for the
torch-free contract, content store and webhook address policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_service_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "import service.main, service.api_cli, service.serve_cli\n"
        "from service.settings import ApiSettings\n"
        "app = service.main.create_app(ApiSettings(keys=['k3y-for-tests-0123456789abcdef-one'], redis_url='redis://127.0.0.1:1/0', storage_dir=sys.argv[1]))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'models', 'workers', 'training', 'zoo'})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "store")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "torch" not in loaded
    assert not [m for m in loaded if m.startswith(("models", "training", "zoo"))]
    assert set(loaded) <= {
        "workers",
        "workers.contracts",
        "workers.content_store",
        "workers.webhook_security",
    }
