import { defineConfig } from '@playwright/test';

/**
 * End-to-end tests for Confab. `cargo leptos end-to-end` starts the server on
 * 127.0.0.1:3000 and then runs `npx playwright test` in this folder; the global setup
 * waits until the server answers /healthz.
 *
 * Playwright never downloads a browser here: it drives Debian's Chromium.
 * CONFAB_BASE_URL points the suite at another server, CHROMIUM_PATH at another Chromium.
 */
const BASE_URL = process.env.CONFAB_BASE_URL ?? 'http://127.0.0.1:3000';

export default defineConfig({
  testDir: './tests',
  globalSetup: './global-setup.ts',
  // One server and one shared database on two cores: run the journeys one at a time.
  workers: 1,
  fullyParallel: false,
  retries: 0,
  forbidOnly: !!process.env.CI,
  reporter: 'list',
  timeout: 30_000,
  expect: { timeout: 10_000 },
  use: {
    browserName: 'chromium',
    baseURL: BASE_URL,
    // Desktop size: the member list is hidden under 900 px.
    viewport: { width: 1280, height: 800 },
    trace: 'off',
    screenshot: 'off',
    video: 'off',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
});
