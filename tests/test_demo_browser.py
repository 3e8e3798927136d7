"""The text demo in a real browser: headless chromium opens it, waits for the prediction that a freshly loaded page
runs on the card's first example, and takes a screenshot that must not be blank.

chromium's `--screenshot` flag cannot wait for that prediction (its virtual clock runs ahead of the server's answer),
so the test drives chromium over the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands on fd 3,
answers on fd 4, each a JSON message ended by a NUL byte), which needs nothing beyond the standard library.
"""

import base64
import io
import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
from test_demo import TEXT, _bert, _save, running


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags that work headless as root on a machine without a display or network (REFERENCE.md §1).
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


class DevTools:
    """A chromium process and a page in it, driven over the DevTools protocol on a pipe."""

    def __init__(self, user_data_dir: str):
        commands, self._commands = os.pipe()  # we write, chromium reads (its fd 3)
        self._answers, answers = os.pipe()  # chromium writes (its fd 4), we read
        # the shell puts the two pipe ends on fds 3 and 4: no `preexec_fn` in a process that runs gradio's threads
        self.process = subprocess.Popen(
            ["bash", "-c", 'exec "$0" "${@:3}" 3<&"$1" 4>&"$2"', CHROMIUM, str(commands), str(answers), *FLAGS,
             f"--user-data-dir={user_data_dir}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(commands, answers), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(commands)
        os.close(answers)
        self._buffer, self._next_id, self.session = b"", 0, None

    def send(self, method: str, timeout: float = 30, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" not in self._buffer:
                chunk = os.read(self._answers, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:  # anything else is an event
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
        raise TimeoutError(method)

    def open(self, url: str, width: int, height: int) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never satisfied {expression}")
            time.sleep(0.25)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        self.session = None
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._commands)
        os.close(self._answers)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium on PATH (`apt-get install chromium`; .ci/run does it)")
def test_text_demo_screenshot_shows_both_explanations(tmp_path, minilm_tokenizer):
    from PIL import Image

    card = {"task": "text-classification", "labels": ["negative", "positive"], "examples": [{"text": TEXT}]}
    teacher = _save(tmp_path / "teacher", _bert(2, seed=1), minilm_tokenizer)
    student = _save(tmp_path / "student", _bert(1, seed=0), minilm_tokenizer, {**card, "teacher": teacher})
    with running(student) as client:
        browser = DevTools(str(tmp_path / "chromium"))
        try:
            browser.open(client.src, width=1280, height=1200)
            # the page explains the card's first example as it loads: wait for both models' highlighted words
            browser.wait_for(
                "document.body.innerText.includes('Explained class') && "
                "document.querySelectorAll('[data-testid=\"highlighted-text:textfield\"]').length === 2"
            )
            time.sleep(1)  # let the deletion plot finish drawing
            text = browser.evaluate("document.body.innerText")
            png = browser.screenshot()
        finally:
            browser.close()
    (tmp_path / "demo.png").write_bytes(png)
    assert "Teacher prediction" in text and "Student prediction" in text and "Spearman" in text
    # integrated gradients by default, with its steps slider; the figures as a table a visitor reads
    assert "Integrated gradients: steps" in text and "(integrated gradients)" in text
    assert "deletion AUC (lower: more faithful)" in text and "Spearman ρ with the teacher" in text
    assert str(tmp_path) not in text
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape == (1200, 1280, 3)
    colours = np.unique(image.reshape(-1, 3)[::7], axis=0)
    assert image.std() > 20 and len(colours) > 200, "the screenshot is blank"
    # gradio paints positive word scores red (239, 68, 60) and negative ones purple (128, 90, 213), with alpha |score|
    # (red keeps green and blue close, unlike the orange "Explain" button)
    red = (image[..., 0] > image[..., 1] + 60) & (np.abs(image[..., 1].astype(int) - image[..., 2]) < 30)
    purple = (image[..., 2] > image[..., 1] + 40) & (image[..., 0] > image[..., 1] + 10)
    assert red.sum() + purple.sum() > 500, "no highlighted words in the screenshot"
