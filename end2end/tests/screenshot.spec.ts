import { mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Page } from '@playwright/test';
import { composer, expect, member, messageTexts, openAs, sendMessage, test, uniqueName, uniqueSuffix } from './helpers';

/** The README's screenshot: docs/screenshot.png at the repository root. */
const SCREENSHOT = resolve(__dirname, '..', '..', 'docs', 'screenshot.png');

test('README screenshot: two people chatting', async ({ browser }) => {
  const room = `general-${uniqueSuffix()}`;
  const alice = uniqueName('alice');
  const bob = uniqueName('bob');

  const alicePage = await openAs(browser, alice, room);
  const bobPage = await openAs(browser, bob, room);

  const conversation: [Page, string][] = [
    [alicePage, 'Morning! Has anyone tried the new build yet?'],
    [bobPage, 'Yes — reconnecting after a network blip is seamless now.'],
    [bobPage, 'Messages sent while offline went out as soon as it was back.'],
    [alicePage, 'Great. Release notes are at https://example.org/confab/notes'],
    [bobPage, 'Reading them now.'],
  ];
  for (const [page, text] of conversation) await sendMessage(page, text);

  await expect(messageTexts(alicePage)).toHaveText(conversation.map(([, text]) => text));
  await expect(member(alicePage, bob)).toBeVisible();

  // Show the typing indicator too.
  await composer(bobPage).pressSequentially('Looks good', { delay: 20 });
  await expect(alicePage.getByTestId('typing')).toContainText(`${bob} is typing`);

  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await alicePage.screenshot({ path: SCREENSHOT });
  expect(statSync(SCREENSHOT).size).toBeGreaterThan(10_000);
});
