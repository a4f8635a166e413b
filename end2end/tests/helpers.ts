/**
 * Shared steps and locators for the Confab journeys.
 *
 * The database lives for the whole run, so every test makes its own rooms and nicks with
 * `uniqueName()`. Message texts must be unique within a room (locators match them exactly).
 */
import { test as base, expect, type Browser, type Locator, type Page } from '@playwright/test';

export { expect };

/** First paint to hydrated page: a debug WASM bundle can take a while to compile. */
export const HYDRATION_TIMEOUT = 20_000;

/**
 * `test` that closes every browser context a test opened with `browser.newContext()`, so
 * users from one journey do not stay connected during the next.
 */
export const test = base.extend<{ closeOpenedContexts: void }>({
  closeOpenedContexts: [
    async ({ browser }, use) => {
      const before = new Set(browser.contexts());
      await use();
      const opened = browser.contexts().filter((context) => !before.has(context));
      await Promise.all(opened.map((context) => context.close()));
    },
    { auto: true },
  ],
});

// ---------------------------------------------------------------------------------------
// Names

/** Base-36 time plus randomness: unique across tests and runs. */
export function uniqueSuffix(): string {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 7);
}

/** `prefix-<suffix>`: a valid room name ([a-z0-9_-], ≤ 64) and nick (≤ 32) for short prefixes. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${uniqueSuffix()}`;
}

/** Matches a whole (whitespace-normalised) text exactly, not as a substring. */
export function exactly(text: string): RegExp {
  return new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
}

// ---------------------------------------------------------------------------------------
// Locators

/** Every message the server has acknowledged, in list order. */
export function messageItems(page: Page): Locator {
  return page.getByTestId('messages').locator('li.message:not(.pending)');
}

/** The text of every acknowledged message, in list order (use with `toHaveText([...])`). */
export function messageTexts(page: Page): Locator {
  return messageItems(page).locator('.text');
}

/** The acknowledged message whose text is exactly `text`. */
export function messageWithText(page: Page, text: string): Locator {
  return messageItems(page).filter({ has: page.locator('.text', { hasText: exactly(text) }) });
}

/** A message still waiting for the server's echo, by its exact text. */
export function pendingWithText(page: Page, text: string): Locator {
  return page
    .getByTestId('messages')
    .locator('li.message.pending')
    .filter({ has: page.locator('.text', { hasText: exactly(text) }) });
}

/** `nick` in the room's member list (visible at desktop width only). */
export function member(page: Page, nick: string): Locator {
  return page.getByTestId('members').locator('li').filter({ hasText: exactly(nick) });
}

/** A joined room's link in the sidebar. */
export function roomLink(page: Page, room: string): Locator {
  return page.locator(`a.room-link[data-room="${room}"]`);
}

/** The composer's text box. */
export function composer(page: Page): Locator {
  return page.locator('#composer-text');
}

// ---------------------------------------------------------------------------------------
// Steps

/** Waits until the connection is up. */
export async function expectOnline(page: Page): Promise<void> {
  await expect(page.getByTestId('status')).toHaveText('Online', { timeout: HYDRATION_TIMEOUT });
}

/** The nick this browser remembers. */
export async function storedNick(page: Page): Promise<string | null> {
  return page.evaluate(() => window.localStorage.getItem('confab.nick'));
}

/** Answers the first-visit dialog and waits until the server has welcomed `nick`. */
export async function chooseNick(page: Page, nick: string): Promise<void> {
  const input = page.locator('#nick-input');
  // The dialog appears once the page has hydrated.
  await expect(input).toBeVisible({ timeout: HYDRATION_TIMEOUT });
  await input.fill(nick);
  await page.getByRole('button', { name: 'Start chatting' }).click();
  await expect(input).toBeHidden();
  await expectOnline(page);
}

/**
 * Waits until `room` is on screen and joined: its title shows, this user is in its member
 * list (so the server acknowledged the join) and the composer takes input.
 */
export async function expectInRoom(page: Page, room: string): Promise<void> {
  await expect(page).toHaveURL(new RegExp(`/r/${room}$`));
  await expect(page.locator('h1#room-title')).toContainText(room);
  await expectOnline(page);
  const nick = await storedNick(page);
  expect(nick, 'a nick is remembered in localStorage').toBeTruthy();
  await expect(member(page, nick!)).toBeVisible();
  await expect(composer(page)).toBeEnabled();
}

/**
 * Opens a fresh browser (its own context: own localStorage, own WebSocket) as `nick`,
 * online in `room`, or in the lobby when no room is given.
 */
export async function openAs(browser: Browser, nick: string, room?: string): Promise<Page> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(room ? `/r/${room}` : '/');
  await chooseNick(page, nick);
  if (room) await expectInRoom(page, room);
  return page;
}

/** Joins (or creates) `room` with the sidebar's join form and waits until it is joined. */
export async function joinRoom(page: Page, room: string): Promise<void> {
  // The lobby shows a second join form; use the sidebar's.
  const sidebar = page.getByRole('navigation', { name: 'Rooms' });
  await sidebar.locator('#join-room').fill(room);
  await sidebar.getByRole('button', { name: 'Join' }).click();
  await expectInRoom(page, room);
}

/**
 * Types `text` into the composer, presses Enter, and waits until the server acknowledged it
 * (a non-pending message with exactly that text). Returns that message.
 */
export async function sendMessage(page: Page, text: string): Promise<Locator> {
  const box = composer(page);
  await box.fill(text);
  await box.press('Enter');
  await expect(box).toHaveValue('');
  const sent = messageWithText(page, text);
  await expect(sent).toBeVisible();
  await expect(pendingWithText(page, text)).toHaveCount(0);
  return sent;
}
