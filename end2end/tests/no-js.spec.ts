import { expect, messageItems, messageTexts, openAs, sendMessage, test, uniqueName } from './helpers';

test('a room is readable without JavaScript', async ({ browser }) => {
  const room = uniqueName('nojs');
  const nick = uniqueName('nora');
  const texts = [
    'This page works without JavaScript',
    'Markup like <b>this</b> stays text',
    'Links too: https://example.org/no-js',
  ];

  const writer = await openAs(browser, nick, room);
  for (const text of texts) await sendMessage(writer, text);

  const context = await browser.newContext({ javaScriptEnabled: false });
  const reader = await context.newPage();
  await reader.goto(`/r/${room}`);

  await expect(reader.locator('h1#room-title')).toContainText(room);
  await expect(messageTexts(reader)).toHaveText(texts);
  await expect(messageItems(reader).first().locator('.author')).toHaveText(nick);
  await expect(reader.getByTestId('messages').locator('b')).toHaveCount(0);
  await expect(reader.getByTestId('messages').locator('a[href="https://example.org/no-js"]')).toHaveCount(1);
  // No hydration, so no nickname dialog either.
  await expect(reader.locator('#nick-input')).toHaveCount(0);
});
