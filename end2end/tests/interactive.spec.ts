import { composer, expect, expectInRoom, HYDRATION_TIMEOUT, openAs, test, uniqueName } from './helpers';

/**
 * How long a room page takes to become usable: from the start of the navigation to the
 * moment its composer is enabled (hydrated, signed in as a nick, socket open). A figure to
 * read, printed, never asserted: `scripts/bench.sh` runs this against a release build
 * (BENCHMARKS.md); in `make test` it runs on the debug build and says so.
 */

declare global {
  interface Window {
    /** `performance.now()` when the composer was first enabled. */
    __interactiveAt?: number;
  }
}

/** Init script: notes when the composer first takes input, from a MutationObserver. */
function watchComposer(): void {
  const check = (): void => {
    const box = document.getElementById('composer-text') as HTMLTextAreaElement | null;
    if (box && !box.disabled && window.__interactiveAt === undefined) {
      window.__interactiveAt = performance.now();
    }
  };
  new MutationObserver(check).observe(document, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: ['disabled'],
  });
}

interface Timing {
  interactive: number;
  domContentLoaded: number;
  response: number;
}

test('a room page becomes interactive soon after navigation (printed, not asserted)', async ({ browser }) => {
  const room = uniqueName('tti');
  const page = await openAs(browser, uniqueName('tti'), room);
  const state = await page.context().storageState();

  const measure = async (label: string, open: () => Promise<import('@playwright/test').Page>) => {
    const target = await open();
    await target.goto(`/r/${room}`);
    await expect(composer(target)).toBeEnabled({ timeout: HYDRATION_TIMEOUT });
    await expectInRoom(target, room);
    const timing: Timing = await target.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming;
      return {
        interactive: window.__interactiveAt ?? Number.NaN,
        domContentLoaded: nav.domContentLoadedEventEnd,
        response: nav.responseEnd,
      };
    });
    expect(timing.interactive, 'the composer was seen becoming enabled').toBeGreaterThan(0);
    const build = process.env.CONFAB_BUILD ?? 'debug build';
    console.log(
      `time to interactive (${label}, ${build}): ${timing.interactive.toFixed(0)} ms ` +
        `(HTML received ${timing.response.toFixed(0)} ms, DOMContentLoaded ${timing.domContentLoaded.toFixed(0)} ms)`,
    );
    return target;
  };

  // A browser that has never loaded the app: nothing cached, the nick remembered.
  const cold = await browser.newContext({ storageState: state });
  await cold.addInitScript(watchComposer);
  const coldPage = await measure('first visit', () => cold.newPage());
  // The same browser again: the WASM and CSS come from its cache.
  await measure('cached', async () => coldPage);
});
