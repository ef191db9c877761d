"""One browser session against the embedded stack; run inside a loopback-only network
namespace by ``test_page.py`` (``unshare -n``), so neither Chromium nor the gateway can
reach any address but 127.0.0.1.

Starts the whole embedded stack (tansu, redis-server, worker, streamer), opens the page in
headless Chromium whose fake microphone plays a WAV, starts a call, waits for transcript
lines and emotion chips, ends the call so every label turns final, saves a screenshot,
and writes what the page showed as JSON for the test to check.

    python -m tests.browser.page_session --wav speech.wav --out DIR
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from deploy.embedded import EmbeddedStack, StackSettings
from deploy.services import free_port

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--window-size=1280,900",
)
SPEAKER = "Ada"


def _browser(wav: Path, profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--use-file-for-fake-audio-capture={wav}%noloop")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def _shown(driver: webdriver.Chrome) -> list[dict[str, object]]:
    """Every transcript line the page shows, with its chip."""
    return driver.execute_script("""
        return [...document.querySelectorAll('.speaker')].flatMap((panel) =>
          [...panel.querySelectorAll('.utterance')].map((li) => {
            const chip = li.querySelector('.chip');
            return {speaker: panel.querySelector('h3').textContent,
                    text: li.querySelector('.text').textContent,
                    label: chip.dataset.label || null,
                    revision: chip.dataset.revision ? Number(chip.dataset.revision) : null,
                    final: chip.classList.contains('final')};
          }));""")


def _wait(driver: webdriver.Chrome, seconds: float, what: str, condition) -> None:
    try:
        WebDriverWait(driver, seconds, poll_frequency=0.25).until(lambda d: condition(_shown(d)))
    except TimeoutException:
        raise SystemExit(f"timed out after {seconds:.0f} s waiting for {what}; page shows {_shown(driver)}, "
                         f"status {driver.find_element(By.ID, 'status').text!r}") from None


def run(wav: Path, out: Path, expected_utterances: int) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    settings = StackSettings(port=free_port(), broker_port=free_port(), redis_port=free_port(),
                             worker_metrics_port=free_port(), data_dir=out / "stack")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with EmbeddedStack(settings) as stack:
        timings["stack_up_s"] = time.monotonic() - t0
        driver = _browser(wav, out / "chromium-profile")
        try:
            driver.get(stack.url)
            WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#legend li"))
            labels = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#legend li")]
            driver.find_element(By.ID, "name").send_keys(SPEAKER)
            driver.find_element(By.ID, "start").click()
            t_join = time.monotonic()
            _wait(driver, 60, "the first labelled utterance", lambda rows: any(r["label"] for r in rows))
            timings["first_label_s"] = time.monotonic() - t_join
            _wait(driver, 90, f"{expected_utterances} labelled utterances",
                  lambda rows: sum(1 for r in rows if r["label"]) >= expected_utterances)
            before_end = _shown(driver)
            invite = driver.find_element(By.ID, "invite-link").get_attribute("value")
            call_id = invite.split("call=")[1].split("#")[0]
            invite_role = _role(invite.split("#invite=")[1])
            driver.find_element(By.ID, "end").click()
            _wait(driver, 60, "every label final", lambda rows: rows and all(r["final"] for r in rows))
            driver.save_screenshot(str(out / "page.png"))
            result = {"labels": labels, "before_end": before_end, "shown": _shown(driver),
                      "timings": timings, "call_id": call_id, "invite_role": invite_role}
        finally:
            driver.quit()
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _role(token: str) -> str:
    """The role a token claims (its payload, unverified): the invite link must not carry a
    participant or subscriber credential."""
    payload = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["role"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wav", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--expected-utterances", type=int, default=2)
    args = parser.parse_args()
    run(args.wav.resolve(), args.out.resolve(), args.expected_utterances)
    return 0


if __name__ == "__main__":
    sys.exit(main())
