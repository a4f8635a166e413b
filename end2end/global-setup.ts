import type { FullConfig } from '@playwright/test';

/** How long to wait for the server to come up (a cold start can be slow on two cores). */
const WAIT_MS = 90_000;
const POLL_MS = 500;

/** Waits until the Confab server answers GET /healthz with 200, or fails after WAIT_MS. */
export default async function globalSetup(config: FullConfig): Promise<void> {
  const baseURL = config.projects[0]?.use.baseURL ?? 'http://127.0.0.1:3000';
  const url = new URL('/healthz', baseURL).toString();
  const deadline = Date.now() + WAIT_MS;
  let lastProblem = 'no answer yet';

  while (Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) return;
      lastProblem = `HTTP ${res.status}`;
    } catch (err) {
      lastProblem = err instanceof Error ? err.message : String(err);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new Error(`Confab did not become healthy at ${url} within ${WAIT_MS / 1000} s (last: ${lastProblem})`);
}
