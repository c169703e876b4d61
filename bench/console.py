"""Human decision latency in the browser (issue 15): from an AuthRequest reaching the engine to
the operator's prompt visible on the console page, in Debian's headless Chromium, p50 and p95
(target p95 <= 250 ms).

What runs (one process, this machine's two shared cores): the engine on the virtual board with
its console (tests/console/consolerig.Stack: `capwarden serve --console` assembled in process),
a human policy on motor_left, Fay A holding it; Chromium logged in as an operator, showing the
console page. Each round Fay B asks for the motor (runtime rtB over the runtime API); the
engine's human policy opens a decision; the page receives it on its live stream and draws it.

The start is taken where the engine's WebSocket server hands the AuthRequest to the engine
(Engine.handle wrapped: wall clock, time.time()); the end in the page, when the decision's card
has been inserted and the frame that shows it was drawn (a MutationObserver on the list, then
requestAnimationFrame and the task after it; performance.timeOrigin + performance.now(), the
same wall clock). After each round the decision is denied through the engine's API and the
next round starts once the card is gone.

Not in bench/__init__.py BENCHES yet: python -m bench.console [ROUNDS]. Needs /usr/bin/chromium.
"""

import asyncio
import os
import sys
import time

from bench import median, percentile, scratch, test_helper

ROUNDS = int(os.environ.get("CAPWARDEN_BENCH_CONSOLE_ROUNDS", "40"))
TARGET_P95_MS = 250
WARMUP = 3

OBSERVE = """() => {
  window.__seen = {};
  const list = document.getElementById("decision-list");
  new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) {
      if (n.dataset && n.dataset.decisionId) {
        const id = n.dataset.decisionId;
        requestAnimationFrame(() => setTimeout(() => {
          window.__seen[id] = performance.timeOrigin + performance.now();
        }, 0));
      }
    }
  }).observe(list, {childList: true});
}"""


async def measure(rounds):
    with scratch("cw-bench-console-") as folder:
        return await _measure(rounds, folder)


async def _measure(rounds, folder):
    rig = test_helper("console", "consolerig")
    if not os.access(rig.CHROMIUM, os.X_OK):
        raise RuntimeError("%s is missing (Debian package chromium)" % rig.CHROMIUM)
    stack = await rig.Stack(folder, {"policies": [{"resource": "sim/motor_left", "policy": "human",
                                                    "timeout_ms": 60000}]}).start()
    engine = stack.app.engine
    arrivals = []
    handle = engine.handle

    async def timed(runtime_id, msg, origin=None):
        if msg.get("message_type") == "AuthRequest" and runtime_id == "rtB":
            arrivals.append(time.time())
        return await handle(runtime_id, msg, origin=origin)
    engine.handle = timed
    samples = []
    try:
        w = stack.world
        a, b = await stack.runtime("rtA"), await stack.runtime("rtB")
        await w.take(a, "motor_left", "write", who="A")
        async with rig.Browser() as browser:
            page = await browser.page()
            await rig.log_in(page, stack.url)
            await page.wait_for_selector("#link.pill-live")
            await page.evaluate(OBSERVE)
            for i in range(rounds + WARMUP):
                ask = asyncio.ensure_future(w.take(b, "motor_left", "write", who="B"))
                while not engine.decisions.pending():
                    await asyncio.sleep(0.005)
                [d] = engine.decisions.pending()
                seen = None
                while seen is None:
                    seen = await page.evaluate("(id) => window.__seen[id] || null", d.decision_id)
                    if seen is None:
                        await asyncio.sleep(0.01)
                if i >= WARMUP:
                    samples.append((seen / 1000.0 - arrivals[-1]) * 1000.0)
                engine.decisions.resolve(d.decision_id, False, rig.OPERATOR)
                try:
                    await ask
                except Exception:
                    pass                        # denied, as asked
                await page.wait_for_selector('li[data-decision-id="%s"]' % d.decision_id, state="detached")
            if browser.errors:
                raise RuntimeError("the page reported errors: %s" % browser.errors[:3])
    finally:
        engine.handle = handle
        await stack.stop()
    return samples


def run(results, rounds=ROUNDS):
    samples = asyncio.run(measure(rounds))
    results.add("console: human decision, request to prompt visible p50", round(median(samples), 1), "ms",
                note="%d rounds, Chromium headless" % len(samples))
    results.add("console: human decision, request to prompt visible p95", round(percentile(samples, 95), 1), "ms",
                target="<= %d ms" % TARGET_P95_MS, note="max %.1f ms" % max(samples))


if __name__ == "__main__":
    from bench import Results

    run(Results(), int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS)
