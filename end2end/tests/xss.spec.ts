import type { Page } from '@playwright/test';
import { expect, expectInRoom, messageWithText, openAs, sendMessage, test, uniqueName } from './helpers';

const PAYLOAD = '<img src=x onerror=alert(1)>';

/** Records every alert/confirm/prompt a page opens (dismissing it so the page goes on). */
function watchDialogs(page: Page, seen: string[]): void {
  page.on('dialog', async (dialog) => {
    seen.push(`${dialog.type()}: ${dialog.message()}`);
    await dialog.dismiss();
  });
}

/** The payload is shown verbatim, as text, and no element was made from it. */
async function expectShownAsText(page: Page): Promise<void> {
  const message = messageWithText(page, PAYLOAD);
  await expect(message).toBeVisible();
  expect(await message.locator('.text').textContent()).toBe(PAYLOAD);
  await expect(page.getByTestId('messages').locator('img')).toHaveCount(0);
}

test('markup in a message is shown as text and never runs', async ({ browser }) => {
  const room = uniqueName('xss');
  const alicePage = await openAs(browser, uniqueName('alice'), room);
  const bobPage = await openAs(browser, uniqueName('bob'), room);
  const dialogs: string[] = [];
  watchDialogs(alicePage, dialogs);
  watchDialogs(bobPage, dialogs);

  await sendMessage(alicePage, PAYLOAD);

  await test.step('live: for the sender and the receiver', async () => {
    await expectShownAsText(alicePage);
    await expectShownAsText(bobPage);
  });

  await test.step('server-rendered: after a reload', async () => {
    await bobPage.reload();
    await expectInRoom(bobPage, room);
    await expectShownAsText(bobPage);
  });

  expect(dialogs, 'no script from a message may run').toEqual([]);
});

test('URLs become safe links, other schemes stay text', async ({ browser }) => {
  const room = uniqueName('links');
  const page = await openAs(browser, uniqueName('lina'), room);
  const url = 'https://example.org/x';

  const message = await sendMessage(page, `notes at ${url} but javascript:alert(1) is not a link`);

  const links = message.locator('.text a');
  await expect(links).toHaveCount(1);
  const link = links.first();
  await expect(link).toHaveAttribute('href', url);
  await expect(link).toHaveText(url);
  const rel = ((await link.getAttribute('rel')) ?? '').split(/\s+/);
  expect(rel).toEqual(expect.arrayContaining(['noopener', 'noreferrer', 'nofollow']));
});
