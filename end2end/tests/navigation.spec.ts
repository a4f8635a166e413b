import { expect, expectInRoom, joinRoom, openAs, roomLink, test, uniqueName } from './helpers';

// Moving between pages happens in place: the page is never reloaded, so the WebSocket and
// every joined room stay up. A marker on `window` survives only if no reload happened.
test('links, the back and forward buttons and the join form switch pages without a reload', async ({
  browser,
}) => {
  const roomA = uniqueName('nav-a');
  const roomB = uniqueName('nav-b');
  const page = await openAs(browser, uniqueName('nav'));
  await page.evaluate(() => ((window as unknown as { navMarker: number }).navMarker = 42));
  const marker = () => page.evaluate(() => (window as unknown as { navMarker?: number }).navMarker);

  await joinRoom(page, roomA);
  await joinRoom(page, roomB);

  await test.step('a sidebar link opens the room in place', async () => {
    await roomLink(page, roomA).click();
    await expectInRoom(page, roomA);
    expect(await marker()).toBe(42);
  });

  await test.step('back and forward follow the history', async () => {
    await page.goBack();
    await expectInRoom(page, roomB);
    await page.goForward();
    await expectInRoom(page, roomA);
    expect(await marker()).toBe(42);
  });

  await test.step('the logo leads to the lobby, which lists both rooms', async () => {
    await page.getByRole('link', { name: 'Confab' }).click();
    await expect(page).toHaveURL(/\/$/);
    await expect(page.getByRole('heading', { name: 'Rooms', level: 1 })).toBeVisible();
    for (const room of [roomA, roomB]) {
      await expect(page.locator('.directory-room', { hasText: room })).toBeVisible();
    }
    expect(await marker()).toBe(42);
  });

  await test.step('an unknown address is a full "not found" page, served as 404', async () => {
    const response = await page.goto('/no/such/page');
    expect(response?.status()).toBe(404);
    await expect(page.getByRole('heading', { name: 'Not found' })).toBeVisible();
  });
});
