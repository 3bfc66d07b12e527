"""A headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, one command per line:
the test (tests/src/clients.rs's `Browser`) writes a JSON command on stdin and reads one JSON
answer on stdout, `{"ok": true, "value": ...}` or `{"ok": false, "error": "..."}`. The
browser runs in whatever network namespace this process was started in.

    python browser.py

Commands ("op" and its fields):
    goto url                 load a page (waits for its load event)
    fill selector value      type into an input
    click selector
    wait selector [state] [timeout_ms]
                             until the element is visible (or attached, hidden...)
    text selector            the element's text
    table selector           the rows of a table's body, as lists of cell texts
    eval js                  evaluate an expression in the page, return its JSON value
    screenshot path          a full-page PNG
    console                  the console messages and page errors so far
    quit
"""

import json
import sys

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def main():
    messages = []
    with sync_playwright() as p:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: messages.append(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                command = json.loads(line)
                op = command["op"]
                if op == "quit":
                    answer(None)
                    break
                answer(run(page, op, command, messages))
            except (PlaywrightError, KeyError, ValueError) as e:
                # What the page said goes with the failure: usually why.
                said = "\n".join(messages[-20:]) or "(nothing)"
                try:
                    body = page.inner_text("body", timeout=1000)[:1500]
                except PlaywrightError:
                    body = "(unreadable)"
                error = (
                    f"{type(e).__name__}: {e}\npage at {page.url}; its console:\n{said}\n"
                    f"its text:\n{body}"
                )
                print(json.dumps({"ok": False, "error": error}), flush=True)
        browser.close()


def answer(value):
    print(json.dumps({"ok": True, "value": value}), flush=True)


def run(page, op, c, messages):
    timeout = c.get("timeout_ms", 10_000)
    if op == "goto":
        page.goto(c["url"], wait_until="load", timeout=timeout)
        return page.url
    if op == "fill":
        page.fill(c["selector"], c["value"], timeout=timeout)
        return None
    if op == "click":
        page.click(c["selector"], timeout=timeout)
        return None
    if op == "wait":
        page.wait_for_selector(c["selector"], state=c.get("state", "visible"), timeout=timeout)
        return None
    if op == "text":
        return page.inner_text(c["selector"], timeout=timeout)
    if op == "table":
        page.wait_for_selector(c["selector"], state="attached", timeout=timeout)
        return page.eval_on_selector(
            c["selector"],
            "t => [...t.tBodies[0].rows].map(r => [...r.cells].map(td => td.textContent.trim()))",
        )
    if op == "eval":
        return page.evaluate(c["js"])
    if op == "screenshot":
        page.screenshot(path=c["path"], full_page=c.get("full_page", True))
        return c["path"]
    if op == "console":
        return list(messages)
    raise ValueError(f"unknown op {op!r}")


if __name__ == "__main__":
    main()
