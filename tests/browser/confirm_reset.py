#!/usr/bin/env python3
"""Headless-browser check of the confirm and reset pages of `mailctl serve`.

Drives Debian's chromium through chromedriver's W3C WebDriver HTTP API with the standard
library only (no selenium, nothing downloaded). Run by tests/browser.rs, which sets up the
accounts, the listener and the links:

    cargo test --test browser -- --ignored

Needs: apt-get install -y chromium chromium-driver
Usage: confirm_reset.py --base URL --confirm PATH --password PW --reset PATH [--screenshots DIR]
Prints '2 passed, 0 failed' (or names the failure and exits 1).
"""
import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Driver:
    def __init__(self, profile):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 30
        while True:
            try:
                self._call("GET", "/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.time() > deadline:
                    raise RuntimeError("chromedriver did not start")
                time.sleep(0.1)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--no-first-run",
                            f"--user-data-dir={profile}",
                            "--window-size=1000,800",
                        ],
                    },
                }
            }
        }
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"webdriver {method} {path}: {e.read().decode(errors='replace')}")

    def s(self, method, path, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url):
        self.s("POST", "/url", {"url": url})

    def find(self, css, timeout=10):
        deadline = time.time() + timeout
        while True:
            try:
                return self.s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]
            except RuntimeError:
                if time.time() > deadline:
                    raise AssertionError(f"no element {css!r} on {self.s('GET', '/url')}:\n{self.source()}")
                time.sleep(0.1)

    def text(self, css):
        return self.s("GET", f"/element/{self.find(css)}/text")

    def click(self, css):
        self.s("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css, value):
        el = self.find(css)
        self.s("POST", f"/element/{el}/clear", {})
        self.s("POST", f"/element/{el}/value", {"text": value})

    def title(self):
        return self.s("GET", "/title")

    def source(self):
        return self.s("GET", "/source")

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))

    def quit(self):
        try:
            self.s("DELETE", "")
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def check_confirm(d, base, path, shots, password):
    d.open(base + path)
    assert "Confirm your address" in d.title(), d.title()
    if shots:
        d.screenshot(os.path.join(shots, "confirm.png"))
    d.type("#password", "not-the-password")
    d.click("#confirm")
    err = d.text("#error")
    assert "not the password" in err, err
    d.type("#password", password)
    d.click("#confirm")
    done = d.text("#done")
    assert "is confirmed" in done, done
    assert "Address confirmed" in d.title(), d.title()
    if shots:
        d.screenshot(os.path.join(shots, "confirmed.png"))
    # Back to the link: it has been used.
    d.open(base + path)
    assert "already been used" in d.title(), d.title()


def check_reset(d, base, path, shots, _password):
    d.open(base + path)
    assert "Choose a new password" in d.title(), d.title()
    d.type("#password", "browser-pass-1")
    d.type("#password2", "browser-pass-2")
    d.click("#save")
    err = d.text("#error")
    assert "differ" in err, err
    if shots:
        d.screenshot(os.path.join(shots, "reset-error.png"))
    d.type("#password", "browser-pass-1")
    d.type("#password2", "browser-pass-1")
    d.click("#save")
    done = d.text("#done")
    assert "is changed" in done, done
    if shots:
        d.screenshot(os.path.join(shots, "reset-done.png"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--confirm", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--reset", required=True)
    ap.add_argument("--screenshots")
    a = ap.parse_args()
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(tool):
            print(f"FAILED: {tool} not found: apt-get install -y chromium chromium-driver")
            print("0 passed, 2 failed")
            return 1
    profile = tempfile.mkdtemp(prefix="mailctl-chromium-")
    passed, failed = 0, 0
    d = Driver(profile)
    try:
        for name, check, path in (
            ("confirm page", check_confirm, a.confirm),
            ("reset page", check_reset, a.reset),
        ):
            try:
                check(d, a.base, path, a.screenshots, a.password)
                print(f"ok: {name}")
                passed += 1
            except Exception as e:  # report every failure, then fail
                print(f"FAILED: {name}: {e}")
                failed += 1
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
