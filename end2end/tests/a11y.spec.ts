import AxeBuilder from '@axe-core/playwright';
import type { Page } from '@playwright/test';
import {
  expect,
  HYDRATION_TIMEOUT,
  openAs,
  postMessages,
  sendMessage,
  test,
  uniqueName,
} from './helpers';

/** Fails on any axe violation of impact "serious" or "critical", listing them. */
async function expectNoSeriousViolations(page: Page): Promise<void> {
  const { violations } = await new AxeBuilder({ page }).analyze();
  const serious = violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => {
      const where = v.nodes.map((n) => n.target.join(' ')).join(', ');
      return `${v.id} [${v.impact}] ${v.help} (${v.helpUrl})\n    at: ${where}`;
    });
  expect(serious, `serious or critical accessibility violations on ${page.url()}:\n${serious.join('\n')}`).toEqual([]);
}

test('lobby with the nickname dialog open', async ({ page }) => {
  await page.goto('/');
  await expect(page.locator('#nick-input')).toBeVisible({ timeout: HYDRATION_TIMEOUT });
  await expectNoSeriousViolations(page);
});

test('lobby after choosing a nickname', async ({ browser }) => {
  const page = await openAs(browser, uniqueName('ada'));
  await expect(page.locator('#nick-input')).toHaveCount(0);
  await expectNoSeriousViolations(page);
});

test('room with messages', async ({ browser }) => {
  const room = uniqueName('a11y');
  const page = await openAs(browser, uniqueName('ada'), room);
  await sendMessage(page, 'Hello, accessible world');
  await sendMessage(page, 'A link: https://example.org/a11y');
  await sendMessage(page, 'And a third message');
  await expectNoSeriousViolations(page);
});

test('room with older messages to load', async ({ browser }) => {
  const room = uniqueName('a11y-old');
  await postMessages(browser, room, Array.from({ length: 60 }, (_, i) => `Older message ${i + 1}`));
  const page = await openAs(browser, uniqueName('ada'), room);
  // The fallback button at the top of the list, with the latest 50 below it.
  await expect(page.getByTestId('messages').getByRole('button', { name: 'Load older messages' })).toBeAttached();
  await expectNoSeriousViolations(page);
});
