import type { Locator } from '@playwright/test';
import { expect, historyEdge, messageItems, messageSeqs, openAs, postMessages, test, uniqueName } from './helpers';

/** 1, 2, …, n. */
function upTo(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

/**
 * Scrolls the message list to its very top and returns the seq of the message then at the
 * top of the view. One synchronous step in the page, so no page can load in between.
 */
async function scrollToTop(list: Locator): Promise<number> {
  return list.evaluate((el) => {
    el.scrollTop = 0;
    const top = el.getBoundingClientRect().top;
    const first = Array.from(el.querySelectorAll('li[data-seq]')).find((li) => li.getBoundingClientRect().bottom > top);
    return Number(first?.getAttribute('data-seq'));
  });
}

test("scrolling back loads every page down to the start of the room and keeps the reader's place", async ({
  browser,
}) => {
  test.setTimeout(60_000);
  const room = uniqueName('scroll');
  await postMessages(browser, room, upTo(130).map((n) => `Old message ${n} of 130 in ${room}`));
  const page = await openAs(browser, uniqueName('rita'), room);
  const list = page.getByTestId('messages');

  await test.step('the room opens on its latest 50 messages', async () => {
    await expect(messageItems(page)).toHaveCount(50);
    await expect(messageItems(page).last()).toHaveAttribute('data-seq', '130');
  });

  for (let step = 1; step <= 10; step++) {
    if ((await historyEdge(page).textContent())?.includes('start of the room')) break;
    const held = await messageItems(page).count();
    const top = await scrollToTop(list);
    await test.step(`at the top: an older page loads above message ${top}, which stays in view`, async () => {
      await expect.poll(() => messageItems(page).count()).toBeGreaterThan(held);
      await expect(list.locator(`li[data-seq="${top}"]`)).toBeInViewport();
    });
  }

  await test.step('every message down to seq 1 is there, once, in order', async () => {
    await expect(historyEdge(page)).toHaveText('This is the start of the room.');
    expect(await messageSeqs(page)).toEqual(upTo(130));
    await scrollToTop(list);
    await expect(historyEdge(page)).toBeInViewport();
  });
});

test('the keyboard scrolls back to the start of a room too', async ({ browser }) => {
  const room = uniqueName('keys');
  await postMessages(browser, room, upTo(70).map((n) => `Message ${n} of 70 in ${room}`));
  const page = await openAs(browser, uniqueName('kim'), room);
  await expect(messageItems(page)).toHaveCount(50);
  await page.getByTestId('messages').focus();
  await page.keyboard.press('Home');
  await expect(historyEdge(page)).toHaveText('This is the start of the room.');
  expect(await messageSeqs(page)).toEqual(upTo(70));
});
