"""The pages in a real headless Chromium against the real stack on loopback.

The stack as an operator runs it, as processes (``harness.stack``): Redis, ``loravet api`` and a
``loravet worker`` (started while the job page is open, so the page has to notice by itself that the
job finished). The adapters are the committed digits examples (a clean and a backdoored PEFT
finetune, ``examples/digits/``) and the predictors the shipped ones (``predictors/``), so the docs'
screenshots show what a user of this checkout sees.

Screenshots of every page (1100 x 900 viewport) go to ``$LORAVET_SCREENSHOTS_DIR`` (``make
screenshots`` sets it to docs/screenshots/), else to a temporary folder, so that ``make test``
leaves the working tree as it found it.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.inprocess import wait_for
from harness.profile import API_KEY
from harness.stack import ProcessStack, StackConfig

pytestmark = [pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(
    os.environ.get("LORAVET_SCREENSHOTS_DIR")
    or Path(tempfile.gettempdir()) / f"loravet-screenshots-{os.getuid()}"
)
SHIPPED_PREDICTORS = ROOT / "predictors"


@dataclass
class Stack:
    """The stack as processes (``harness.stack``: Redis, ``loravet api``, a ``loravet worker``
    started when a test says so, as an operator would) and the committed example adapters."""

    processes: ProcessStack
    work: Path

    @property
    def base(self) -> str:
        return self.processes.url

    @property
    def worker(self) -> subprocess.Popen[bytes] | None:
        return self.processes.workers[0] if self.processes.workers else None

    @property
    def predictors(self) -> Path:
        return self.processes.config.predictors or self.work / "no-predictors"

    @property
    def has_predictors(self) -> bool:
        return self.predictors.is_dir() and any(self.predictors.iterdir())

    @staticmethod
    def example(name: str) -> tuple[Path, Path]:
        """The committed digits example adapter ``name`` (``clean`` or ``backdoored``) and its config."""
        folder = ROOT / "examples" / "digits" / name
        return folder / "adapter_model.safetensors", folder / "adapter_config.json"

    def start_worker(self, predictors: Path | None = None) -> None:
        """A real resident worker process (``loravet worker``), as an operator would run it."""
        self.processes.start_worker(0, predictors)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    predictors = SHIPPED_PREDICTORS if SHIPPED_PREDICTORS.is_dir() else None
    config = StackConfig(workers=0, predictors=predictors, ready_path="/healthz")
    with ProcessStack(tmp_path / "stack", config) as processes:
        yield Stack(processes, tmp_path)


def shot(driver: Any, name: str, scroll_to: str | None = None) -> None:
    """A viewport screenshot for the docs (PNG): the top of the page, or from element ``scroll_to``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    if scroll_to is None:
        driver.execute_script("window.scrollTo(0, 0)")
    else:
        driver.execute_script(
            "const e = document.getElementById(arguments[0]);"
            "window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY - 12);",
            scroll_to,
        )
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def text_of(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def wait_until(driver: Any, condition: Any, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def severe_console_messages(driver: Any) -> list[str]:
    """Errors the page logged (script errors, CSP violations), except the expected HTTP refusals."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "the server responded with a status of" not in e["message"]
    ]


def drop_files(driver: Any, paths: list[Path]) -> None:
    """Drop files on the upload form as a drag-and-drop would (a DataTransfer on a drop event)."""
    from selenium.webdriver.common.by import By

    driver.execute_script(
        "const i = document.createElement('input'); i.type = 'file'; i.multiple = true;"
        "i.id = 'test-drop-source'; i.style = ''; document.body.appendChild(i);"
    )
    driver.find_element(By.ID, "test-drop-source").send_keys("\n".join(str(p) for p in paths))
    driver.execute_script(
        "const src = document.getElementById('test-drop-source');"
        "const dt = new DataTransfer(); for (const f of src.files) { dt.items.add(f); }"
        "document.getElementById('upload-form').dispatchEvent("
        "  new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));"
        "src.remove();"
    )


def test_a_reviewer_signs_in_uploads_and_reads_the_verdicts(
    chromium: Any, stack: Stack, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = chromium
    driver.set_window_size(1100, 900)
    base = stack.base
    expected = {"review"} if not stack.has_predictors else {"accept", "review", "reject"}

    # -- a page without a session redirects to sign-in (and comes back after it)
    driver.get(f"{base}/ui/reports")
    wait_until(driver, lambda d: "/ui/sign-in" in d.current_url)
    assert "next=%2Fui%2Freports" in driver.current_url
    assert driver.find_element(By.TAG_NAME, "h1").text == "Sign in"
    key_box = driver.find_element(By.ID, "api_key")
    assert driver.switch_to.active_element == key_box  # the key field has the focus
    shot(driver, "sign-in")
    key_box.send_keys("k3y-that-this-instance-never-issued" + Keys.ENTER)
    wait_until(driver, lambda d: d.find_elements(By.ID, "sign-in-error"))
    assert "not accepted by this loravet instance" in text_of(driver, "sign-in-error")
    driver.find_element(By.ID, "api_key").send_keys(API_KEY + Keys.ENTER)  # the keyboard is enough
    wait_until(driver, lambda d: d.current_url.endswith("/ui/reports"))
    assert "No report yet" in driver.page_source

    # -- keyboard: the first Tab reaches the skip link, and focus is visible
    driver.get(f"{base}/ui/upload")
    shot(driver, "upload")
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    focused = driver.switch_to.active_element
    assert focused.get_attribute("class") == "skip"
    assert focused.value_of_css_property("outline-style") != "none"

    # -- a pickle is refused, and the page says why
    pickled = tmp_path / "adapter_model.bin"
    pickled.write_bytes(
        pickle.dumps({"base_model.model.fc1.lora_A.weight": [0.0] * 64}, protocol=4)
    )
    driver.find_element(By.ID, "file").send_keys(str(pickled))
    driver.find_element(By.ID, "upload-button").click()
    wait_until(driver, lambda d: d.find_element(By.ID, "upload-error").is_displayed())
    refusal = text_of(driver, "upload-error")
    assert "Not a safetensors file (HTTP 415)" in refusal
    assert "pickle" in refusal and "can run code when loaded" in refusal and "refused" in refusal
    assert driver.switch_to.active_element.get_attribute("id") == "upload-error"
    shot(driver, "upload-refused", scroll_to="upload-form")

    # -- the clean example: file picker, progress, then the job page, which updates by itself
    clean, clean_config = stack.example("clean")
    driver.get(f"{base}/ui/upload")
    driver.find_element(By.ID, "file").send_keys(str(clean))
    driver.find_element(By.ID, "config").send_keys(str(clean_config))
    assert "adapter: adapter_model.safetensors" in text_of(driver, "chosen")
    driver.find_element(By.ID, "upload-button").click()
    wait_until(driver, lambda d: "/ui/jobs/" in d.current_url)
    assert text_of(driver, "job-status") == "Waiting for a worker"  # no worker yet
    shot(driver, "job")
    job_url = driver.current_url
    stack.start_worker()
    wait_until(driver, lambda d: text_of(d, "job-status") == "Finished", timeout=90)
    assert driver.current_url == job_url  # no reload: the page polled
    link = driver.find_element(By.ID, "report-link")
    assert link.is_displayed() and "verdict" in link.text
    shot(driver, "job-finished")
    link.click()
    wait_until(driver, lambda d: "/ui/reports/" in d.current_url)
    clean_verdict = text_of(driver, "verdict-value").lower()
    assert clean_verdict in expected
    if not stack.has_predictors:
        assert "no predictor for this base model" in text_of(driver, "verdict").lower()
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.plot")) == 2
    assert driver.find_elements(By.CSS_SELECTOR, "#norm-plot g.bar")
    shot(driver, "report")
    clean_report = driver.current_url

    # -- the backdoored example, dropped on the form (drag and drop); the worker is running now
    backdoored, backdoored_config = stack.example("backdoored")
    driver.get(f"{base}/ui/upload")
    drop_files(driver, [backdoored, backdoored_config])
    chosen = text_of(driver, "chosen")
    assert (
        "adapter: adapter_model.safetensors" in chosen and "config: adapter_config.json" in chosen
    )
    driver.find_element(By.ID, "upload-button").click()
    wait_until(driver, lambda d: "/ui/jobs/" in d.current_url or "/ui/reports/" in d.current_url)
    if "/ui/jobs/" in driver.current_url:
        wait_until(driver, lambda d: text_of(d, "job-status") == "Finished", timeout=60)
        driver.find_element(By.ID, "report-link").click()
    wait_until(driver, lambda d: "/ui/reports/" in d.current_url and d.current_url != clean_report)
    backdoored_verdict = text_of(driver, "verdict-value").lower()
    assert backdoored_verdict in expected

    # -- recent reports, newest first, filtered by verdict
    driver.get(f"{base}/ui/reports")
    rows = driver.find_elements(By.CSS_SELECTOR, "#recent-table tbody tr")
    assert len(rows) == 2
    assert rows[0].find_element(By.CSS_SELECTOR, ".badge").text.lower() == backdoored_verdict
    driver.find_element(By.CSS_SELECTOR, f"a.filter.verdict-{clean_verdict}").click()
    wait_until(driver, lambda d: f"verdict={clean_verdict}" in d.current_url)
    filtered = driver.find_elements(By.CSS_SELECTOR, "#recent-table tbody tr .badge")
    assert filtered and all(b.text.lower() == clean_verdict for b in filtered)
    driver.get(f"{base}/ui/reports")
    shot(driver, "recent")
    driver.find_element(By.CSS_SELECTOR, "#recent-table tbody tr a").click()
    wait_until(driver, lambda d: "/ui/reports/" in d.current_url)

    # -- predictors
    driver.get(f"{base}/ui/predictors")
    wait_until(driver, lambda d: "worker(s) alive" in text_of(d, "worker-count"), timeout=30)
    if not stack.has_predictors:
        assert "No predictor is loaded" in driver.page_source
    shot(driver, "predictors")

    # -- a narrow screen: nothing wider than the viewport but the tables' own scroll areas
    driver.set_window_size(420, 900)
    driver.get(clean_report)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1
    shot(driver, "report-narrow")
    driver.set_window_size(1100, 900)

    assert severe_console_messages(driver) == []

    # -- signing out ends the session
    driver.get(f"{base}/ui/upload")
    driver.find_element(By.CSS_SELECTOR, "form.sign-out button").click()
    wait_until(driver, lambda d: "/ui/sign-in" in d.current_url)
    assert "You are signed out." in driver.page_source
    driver.get(f"{base}/ui/upload")
    wait_until(driver, lambda d: "/ui/sign-in" in d.current_url)
    assert wait_for(lambda: stack.worker is not None and stack.worker.poll() is None)


def odd_adapter(layers: int = 6, hidden: int = 32, rank: int = 4) -> bytes:
    """A PEFT LoRA on a small BERT-style encoder whose layer-3 value delta is 40 times its peers'."""
    import numpy as np

    from harness.lora_files import safetensors_bytes

    rng = np.random.default_rng(11)
    tensors: dict[str, Any] = {}
    for i in range(layers):
        for proj in ("query", "value"):
            name = f"base_model.model.encoder.layer.{i}.attention.self.{proj}"
            boost = 40.0 if (i, proj) == (3, "value") else 1.0
            tensors[f"{name}.lora_A.weight"] = rng.normal(size=(rank, hidden)).astype(np.float32)
            tensors[f"{name}.lora_B.weight"] = (
                rng.normal(size=(hidden, rank)) * 0.05 * boost
            ).astype(np.float32)
    return safetensors_bytes(tensors)


def write_test_predictors(directory: Path, adapter: bytes) -> None:
    """Two tiny, untrained GL-net checkpoints for the adapter's spec (test fixtures, not a model).

    The harmful one has threshold 0, so it flags everything (a reject verdict to look at); their
    validation metrics are chance level, which is what an untrained predictor has.
    """
    torch = pytest.importorskip("torch")
    from lora_io import load_adapter
    from models import PredictorConfig, build_model, save_predictor

    spec = load_adapter(adapter).spec
    torch.manual_seed(0)
    tasks = (
        ("harmful", 0.0, {"auroc": 0.5, "tpr_at_1pct_fpr": 0.01, "n_pos": 20, "n_neg": 20}),
        ("quality", None, {"r2": 0.0, "kendall_tau": 0.0, "mae": 0.25}),
    )
    for task, threshold, metrics in tasks:
        model = build_model("gl_net", spec, 1, hidden=4, n_layers=1, head_dim=8, dropout=0.0)
        config = PredictorConfig(
            predictor_id=f"test-fixture-{task}", version="0.1", task=task, model_name="gl_net", hparams={},  # type: ignore[arg-type]
            spec=spec, out_features=1, target_mean=[], target_std=[], threshold=threshold,
            label_names=[task], base_model="tiny BERT (untrained test fixture)",
        )  # fmt: skip
        save_predictor(model, directory / config.predictor_id, config, meta={"metrics": metrics})


def test_predictions_beside_thresholds_and_an_odd_module(
    chromium: Any, stack: Stack, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    adapter = tmp_path / "odd" / "adapter_model.safetensors"
    adapter.parent.mkdir()
    adapter.write_bytes(odd_adapter())
    write_test_predictors(tmp_path / "test-predictors", adapter.read_bytes())
    stack.start_worker(tmp_path / "test-predictors")
    driver = chromium
    driver.set_window_size(1100, 900)

    driver.get(f"{stack.base}/ui/upload")  # the previous app's session is not valid here
    wait_until(driver, lambda d: "/ui/sign-in" in d.current_url)
    driver.find_element(By.ID, "api_key").send_keys(API_KEY + Keys.ENTER)
    wait_until(driver, lambda d: d.current_url.endswith("/ui/upload"))
    driver.find_element(By.ID, "file").send_keys(str(adapter))
    driver.find_element(By.ID, "upload-button").click()
    wait_until(driver, lambda d: "/ui/jobs/" in d.current_url)
    wait_until(driver, lambda d: text_of(d, "job-status") == "Finished", timeout=90)
    driver.find_element(By.ID, "report-link").click()
    wait_until(driver, lambda d: "/ui/reports/" in d.current_url)

    assert text_of(driver, "verdict-value").lower() == "reject"
    assert "harmful" in text_of(driver, "verdict")
    rows = driver.find_elements(By.CSS_SELECTOR, "tr.prediction")
    assert len(rows) == 2
    harmful = next(r for r in rows if "test-fixture-harmful" in r.text)
    assert "flagged" in harmful.get_attribute("class")
    assert "is at or above the threshold 0.00: flagged as harmful" in harmful.text
    assert "ranks a harmful adapter above a clean one 50% of the time" in harmful.text
    quality = next(r for r in rows if "test-fixture-quality" in r.text)
    assert "no threshold, so it informs but does not decide" in quality.text
    assert "explains 0% of the variation in measured quality" in quality.text
    checks = driver.find_element(By.CSS_SELECTOR, "tr.check-warn").text
    assert "norm_outliers" in checks and "encoder.layer.3.attention.self.value" in checks
    shot(driver, "report-predictions")

    odd = driver.find_elements(By.CSS_SELECTOR, "#norm-plot g.bar.odd")
    assert [g.get_attribute("data-module") for g in odd] == ["encoder.layer.3.attention.self.value"]
    assert len(driver.find_elements(By.CSS_SELECTOR, "#norm-plot g.bar")) == 12
    assert "encoder.layer.3.attention.self.value" in text_of(driver, "odd-modules")
    odd_rows = driver.find_elements(By.CSS_SELECTOR, ".modules tr.odd")
    assert len(odd_rows) == 1 and "stands out" in odd_rows[0].text
    shot(driver, "report-plots", scroll_to="plots-heading")

    driver.get(f"{stack.base}/ui/predictors")
    wait_until(driver, lambda d: d.find_elements(By.ID, "predictors-table"), timeout=30)
    table = text_of(driver, "predictors-table")
    assert "test-fixture-harmful" in table and "test-fixture-quality" in table
    assert "tiny BERT (untrained test fixture)" in table
    assert "validated on 20 harmful and 20 clean adapters" in table
    shot(driver, "predictors-loaded")
    assert severe_console_messages(driver) == []
