"""Screenshots of the Dagster UI for the README (docs/ui/*.png), taken from a running ``dagster dev``.

Not part of the tests and not a dependency of pipekit. How they were made:

    apt-get install -y chromium                  # Debian's browser, headless
    python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
    bash scripts/demo.sh && export DAGSTER_HOME=$PWD/.dagster_home && mkdir -p $DAGSTER_HOME
    .venv/bin/dagster dev -p 3111 &              # wait until it answers
    .venv/bin/dagster job execute -m pipekit_dagster.definitions -j demo_job
    /tmp/pw/bin/python scripts/ui_screenshots.py RUN_ID docs/ui
"""

import sys

from playwright.sync_api import sync_playwright

BASE = "http://127.0.0.1:3111"


def main(run_id: str, out: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 860})
        page.goto(BASE + "/assets")
        page.wait_for_timeout(4000)
        skip = page.get_by_role("button", name="Skip")  # Dagster's first-visit newsletter dialog
        if skip.count():
            skip.first.click()
        for path, name in (("/assets", "catalog"), (f"/runs/{run_id}", "run"), ("/assets/orders", "asset-orders")):
            page.goto(BASE + path)
            page.wait_for_timeout(5000)
            page.screenshot(path=f"{out}/{name}.png")
            print(f"{out}/{name}.png")
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
