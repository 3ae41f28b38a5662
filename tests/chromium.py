"""A headless Chromium driven over the DevTools protocol, for the tests that look at the built site.

Chromium is started with ``--remote-debugging-pipe``: it reads JSON commands, each ended by a NUL
byte, on its file descriptor 3 and writes replies and events on 4. ``Chromium`` opens one tab,
attached as a flat session, and offers what the site tests need: open a page and wait for its
``load`` event (its images and styles loaded), evaluate JavaScript, take a screenshot, and the
list of every URL the tab asked for. Host names other than 127.0.0.1 resolve to nothing; an
address given as a number would still go out, which is why the site tests check every URL the
tab asked for.
"""

import base64
import fcntl
import json
import os
import select
import shlex
import shutil
import subprocess
import time

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find():
    """The path of a Chromium on this machine, or None."""
    return next((path for path in map(shutil.which, NAMES) if path), None)


class Chromium:
    def __init__(self, executable, profile, width=1280, height=900):
        to_child, self._to_browser = os.pipe()  # the browser reads commands on its fd 3
        self._from_browser, from_child = os.pipe()  # and writes on its fd 4
        # the child's ends moved above 4, so that bash's 3<& and 4>& cannot overwrite them
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child, from_child)]
        for fd in (to_child, from_child):
            os.close(fd)
        flags = ["--headless=new", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                 "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        command = " ".join(map(shlex.quote, [executable, *flags])) + f" 3<&{ends[0]} 4>&{ends[1]}"
        try:
            self._process = subprocess.Popen(["bash", "-c", f"exec {command}"], pass_fds=ends,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            self._process = None
            self.close()
            raise
        finally:
            for fd in ends:  # only the browser holds its ends: its exit closes the pipe we read
                os.close(fd)
        self._buffer, self._next_id, self.events = b"", 0, []
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Network", "Runtime"):
                self.send(f"{domain}.enable", session=True)
            self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _read(self, deadline):
        """The next message from the browser (a dict); TimeoutError after ``deadline``."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its pipe (did it start?)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, session=False, timeout=30, **params):
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method, timeout=30):
        """Wait for the event ``method`` of the tab (events already kept count)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def open(self, url, timeout=30):
        """Load ``url`` in the tab and wait for its load event; ``requested`` starts afresh."""
        self.events = []
        self.send("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired", timeout)

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (JSON-able values only)."""
        result = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path):
        """The whole page, top to bottom, as a PNG file."""
        data = self.send("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))
        return path

    def requested(self):
        """Every URL the tab asked for since the last ``open`` began."""
        return [event["params"]["request"]["url"] for event in self.events
                if event.get("method") == "Network.requestWillBeSent"]

    def close(self):
        """Ask the browser to quit (kill it if it does not) and close the pipes."""
        if self._process is not None:
            try:
                self.send("Browser.close", timeout=5)
            except (RuntimeError, TimeoutError, OSError):
                pass
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:  # closed already
                pass
