/**
 * Shared steps and locators for the Confab journeys.
 *
 * The database lives for the whole run, so every test makes its own rooms and nicks with
 * `uniqueName()`. Message texts must be unique within a room (locators match them exactly).
 */
import { execFile } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import {
  test as base,
  expect,
  type Browser,
  type BrowserContext,
  type Locator,
  type Page,
  type WebSocketRoute,
} from '@playwright/test';

export { expect };

const execFileAsync = promisify(execFile);

/** First paint to hydrated page: a debug WASM bundle can take a while to compile. */
export const HYDRATION_TIMEOUT = 20_000;

declare global {
  interface Window {
    /** Filled by the CSP guard's init script: "<directive> <blocked URI>" per violation. */
    __cspViolations?: string[];
  }
}

/** Init script: keeps this document's Content-Security-Policy violations in the window. */
function recordCspViolations(): void {
  document.addEventListener('securitypolicyviolation', (e) =>
    (window.__cspViolations ||= []).push(e.violatedDirective + ' ' + e.blockedURI),
  );
}

/**
 * Collects Content-Security-Policy violations from every page of the contexts it watches:
 * the browser's console reports (kept here, so they outlive reloads and closed pages) and
 * the documents' own `securitypolicyviolation` events (kept in the window until it
 * navigates away; read by `collect`).
 */
class CspGuard {
  private readonly installed = new Map<BrowserContext, Promise<unknown>>();
  private readonly seen: string[] = [];

  /** Watches `context` (once); resolves once pages it opens from then on record violations. */
  watch(context: BrowserContext): Promise<unknown> {
    let installed = this.installed.get(context);
    if (!installed) {
      context.pages().forEach((page) => this.listen(page));
      context.on('page', (page) => this.listen(page));
      installed = context.addInitScript(recordCspViolations);
      this.installed.set(context, installed);
    }
    return installed;
  }

  /** Adds the violations recorded by the open pages of `contexts` (all watched ones by default). */
  async collect(contexts: Iterable<BrowserContext> = this.installed.keys()): Promise<void> {
    for (const context of contexts) {
      for (const page of context.pages()) {
        const events = await page.evaluate(() => window.__cspViolations ?? []).catch(() => []);
        this.seen.push(...events.map((event) => `${page.url()}: securitypolicyviolation ${event}`));
      }
    }
  }

  /** Every violation collected so far, one line each. */
  violations(): string[] {
    return [...this.seen];
  }

  private listen(page: Page): void {
    page.on('console', (message) => {
      if (message.text().includes('Content Security Policy')) {
        this.seen.push(`${page.url()}: console ${message.text()}`);
      }
    });
  }
}

/**
 * `test` with two automatic guards:
 * - every browser context the test opened with `browser.newContext()` is closed at the end,
 *   so users from one journey do not stay connected during the next;
 * - every page of every context (the `page` fixture's and those the test opened) is watched
 *   for Content-Security-Policy violations, and the test fails listing them if there were any.
 */
export const test = base.extend<{ closeOpenedContexts: void; cspGuard: CspGuard }>({
  closeOpenedContexts: [
    async ({ browser }, use) => {
      const before = new Set(browser.contexts());
      await use();
      const opened = browser.contexts().filter((context) => !before.has(context));
      await Promise.all(opened.map((context) => context.close()));
    },
    { auto: true },
  ],
  // Set up after (so torn down before) `closeOpenedContexts`: it reads the pages while they are open.
  cspGuard: [
    async ({ browser, closeOpenedContexts }, use) => {
      const guard = new CspGuard();
      // Browser emits 'context' before `newContext()` resolves, so the init script is on its
      // way before the test can open a page in it.
      const onContext = (context: BrowserContext) => void guard.watch(context).catch(() => {});
      browser.on('context', onContext);
      try {
        await use(guard);
      } finally {
        browser.off('context', onContext);
      }
      await guard.collect();
      const violations = guard.violations();
      expect(violations, `Content-Security-Policy violations:\n${violations.join('\n')}`).toEqual([]);
    },
    { auto: true },
  ],
  // The `page` fixture's context: watched before its page exists, read before it is closed.
  context: async ({ context, cspGuard }, use) => {
    await cspGuard.watch(context);
    await use(context);
    await cspGuard.collect([context]);
  },
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

/** Every copy of the message whose text is exactly `text`, acknowledged or pending. */
export function everyMessageWithText(page: Page, text: string): Locator {
  return page
    .getByTestId('messages')
    .locator('li.message')
    .filter({ has: page.locator('.text', { hasText: exactly(text) }) });
}

/** The `data-seq` of every acknowledged message, in list order. */
export async function messageSeqs(page: Page): Promise<number[]> {
  return messageItems(page).evaluateAll((items) => items.map((li) => Number(li.getAttribute('data-seq'))));
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

/** The open room; `data-live="true"` once this connection's join of it was answered. */
export function roomSection(page: Page): Locator {
  return page.locator('section.room');
}

/** The connection status in the sidebar: "Online", "Connecting…" or "Offline, retrying in N s". */
export function connectionStatus(page: Page): Locator {
  return page.getByTestId('status');
}

// ---------------------------------------------------------------------------------------
// Steps

/** Waits until the connection is up. */
export async function expectOnline(page: Page): Promise<void> {
  await expect(connectionStatus(page)).toHaveText('Online', { timeout: HYDRATION_TIMEOUT });
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
 * Waits until `room` is on screen and live: its title shows, the server answered this
 * connection's join (`data-live="true"`) and the composer takes input.
 */
export async function expectInRoom(page: Page, room: string): Promise<void> {
  await expect(page).toHaveURL(new RegExp(`/r/${room}$`));
  await expect(page.locator('h1#room-title')).toContainText(room);
  await expectOnline(page);
  await expect(roomSection(page)).toHaveAttribute('data-live', 'true');
  await expect(composer(page)).toBeEnabled();
}

/**
 * A fresh browser (its own context: own localStorage, own WebSocket) with a blank page, for
 * tests that set the page up (routes, listeners) before it loads; then call `enterAs`.
 */
export async function newUserPage(browser: Browser): Promise<Page> {
  const context = await browser.newContext();
  return context.newPage();
}

/** Loads `room` (or the lobby when no room is given) in `page` and chooses `nick`, online. */
export async function enterAs(page: Page, nick: string, room?: string): Promise<void> {
  await page.goto(room ? `/r/${room}` : '/');
  await chooseNick(page, nick);
  if (room) await expectInRoom(page, room);
}

/** Opens a fresh browser as `nick`, online in `room`, or in the lobby when no room is given. */
export async function openAs(browser: Browser, nick: string, room?: string): Promise<Page> {
  const page = await newUserPage(browser);
  await enterAs(page, nick, room);
  return page;
}

/** Joins (or creates) `room` with the sidebar's join form and waits until it is joined. */
export async function joinRoom(page: Page, room: string): Promise<void> {
  // The sidebar's form; the lobby's own is #lobby-join-room.
  const input = page.locator('#join-room');
  await input.fill(room);
  await page.locator('form', { has: input }).getByRole('button', { name: 'Join' }).click();
  await expectInRoom(page, room);
}

/** Types `text` into the composer and presses Enter; does not wait for the server. */
export async function submitMessage(page: Page, text: string): Promise<void> {
  const box = composer(page);
  await box.fill(text);
  await box.press('Enter');
  await expect(box).toHaveValue('');
}

/**
 * Types `text` into the composer, presses Enter, and waits until the server acknowledged it
 * (a non-pending message with exactly that text). Returns that message.
 */
export async function sendMessage(page: Page, text: string): Promise<Locator> {
  await submitMessage(page, text);
  const sent = messageWithText(page, text);
  await expect(sent).toBeVisible();
  await expect(pendingWithText(page, text)).toHaveCount(0);
  return sent;
}

/** The status line at the top of the message list ("This is the start of the room.", …). */
export function historyEdge(page: Page): Locator {
  return page.getByTestId('history-edge');
}

// ---------------------------------------------------------------------------------------
// Posting many messages, and watching a page's socket

/** Texts one posting connection sends at once: under the default burst (40), so none waits. */
const POST_BATCH = 30;

/**
 * Posts `texts` to `room` straight over the WebSocket (no UI), each stored once: one
 * connection with its own nick per `POST_BATCH` texts, all connections at once, so
 * hundreds of messages take a second rather than the rate limit's minutes. Texts of one
 * connection are stored in order; connections interleave. A refused send is resent
 * after its `retry_after_ms`. Resolves once every text is stored.
 */
export async function postMessages(browser: Browser, room: string, texts: string[]): Promise<void> {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    // Any page of the server: the socket's Origin must be the server's own.
    await page.goto('/healthz');
    const batches: string[][] = [];
    for (let i = 0; i < texts.length; i += POST_BATCH) batches.push(texts.slice(i, i + POST_BATCH));
    const nicks = batches.map((_, i) => `${uniqueName('post')}${i}`);
    await page.evaluate(
      async ({ room, batches, nicks }) => {
        const url = location.origin.replace(/^http/, 'ws') + '/ws';
        const post = (nick: string, batch: string[]) =>
          new Promise<void>((resolve, reject) => {
            const ws = new WebSocket(url);
            const waiting = new Map(batch.map((text, i) => [`${nick}-${i}`, text]));
            const send = (id: string) =>
              ws.send(JSON.stringify({ type: 'send', room, text: waiting.get(id), client_id: id }));
            ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', nick }));
            ws.onerror = () => reject(new Error(`${nick}: socket error`));
            ws.onmessage = (event) => {
              const msg = JSON.parse(event.data);
              if (msg.type === 'welcome') {
                ws.send(JSON.stringify({ type: 'join', room }));
              } else if (msg.type === 'joined') {
                for (const id of waiting.keys()) send(id);
              } else if (msg.type === 'message' && waiting.delete(msg.client_id) && waiting.size === 0) {
                ws.close();
                resolve();
              } else if (msg.type === 'error' && msg.code === 'rate_limited' && msg.client_id) {
                setTimeout(() => send(msg.client_id), msg.retry_after_ms ?? 1000);
              } else if (msg.type === 'error') {
                reject(new Error(`${nick}: ${event.data}`));
              }
            };
          });
        await Promise.all(batches.map((batch, i) => post(nicks[i], batch)));
      },
      { room, batches, nicks },
    );
  } finally {
    await context.close();
  }
}

/** A frame of the protocol, as parsed JSON. */
export type Frame = { type: string; [field: string]: unknown };

/**
 * A page's WebSocket to /ws, relayed through Playwright so the test can see and steer
 * its frames. Every frame either way is recorded (`fromPage`, `toPage`). `drop()` cuts
 * the live connection and fails new ones until `restore()`; `hold()` keeps the page's
 * frames from the server until `release()` sends them all at once (typing notices it
 * drops: stale by then, and a pile of them is only refused); `mute()` drops the
 * server's frames to the page, as if they were lost on the way.
 */
export class SocketRelay {
  readonly fromPage: Frame[] = [];
  readonly toPage: Frame[] = [];
  private live?: { page: WebSocketRoute; server: WebSocketRoute };
  private refusing = false;
  private muted = false;
  private held: string[] | null = null;

  /** Must run before `page` loads the app. */
  static async install(page: Page): Promise<SocketRelay> {
    const relay = new SocketRelay();
    await page.routeWebSocket(/\/ws$/, (ws) => relay.accept(ws));
    return relay;
  }

  private accept(ws: WebSocketRoute): void {
    if (this.refusing) {
      // Opens with no server behind it and hangs up on the client's first frame (its hello):
      // closed before it opens, the routed socket fires no 'error' and the client would wait.
      ws.onMessage(() => void ws.close());
      return;
    }
    const server = ws.connectToServer();
    ws.onMessage((message) => {
      const text = String(message);
      this.fromPage.push(JSON.parse(text));
      if (!this.held) server.send(text);
      else if (JSON.parse(text).type !== 'typing') this.held.push(text);
    });
    server.onMessage((message) => {
      const text = String(message);
      this.toPage.push(JSON.parse(text));
      if (!this.muted) ws.send(text);
    });
    this.live = { page: ws, server };
  }

  async drop(): Promise<void> {
    this.refusing = true;
    const live = this.live;
    this.live = undefined;
    this.held = null;
    this.muted = false;
    if (live) await Promise.all([live.page.close(), live.server.close()]);
  }

  restore(): void {
    this.refusing = false;
  }

  hold(): void {
    this.held ??= [];
  }

  /** How many frames `hold()` is keeping back, of `type` (all kinds by default). */
  heldCount(type?: string): number {
    return (this.held ?? []).filter((text) => !type || JSON.parse(text).type === type).length;
  }

  release(): void {
    const held = this.held ?? [];
    this.held = null;
    for (const text of held) this.live?.server.send(text);
  }

  mute(): void {
    this.muted = true;
  }

  /** Frames of `type` in `frames` (e.g. `relay.toPage`). */
  static ofType(frames: Frame[], type: string): Frame[] {
    return frames.filter((frame) => frame.type === type);
  }
}

// ---------------------------------------------------------------------------------------
// Accounts
//
// The sign-in, account, settings, new-room and DM pages are plain server-rendered forms:
// each step submits one and waits for the page it leads to. The first account of a fresh
// database becomes its admin, and the database lives for the whole run, so no journey may
// count on being (or not being) the first to sign up.

/** A password the server accepts: 12 characters or more and not on its common list. */
export const PASSWORD = 'plum kettle orbit 42';

/** The path (and query) of a page's URL, for `toHaveURL` checks of where a form led. */
function pathOf(url: URL): string {
  return url.pathname + url.search;
}

/** The sign-in page that comes back to `next`. */
function loginPath(next: string): string {
  return `/login?next=${encodeURIComponent(next)}`;
}

/** The sign-in page's error (wrong password, a taken username, …), and the other forms'. */
export function formError(page: Page): Locator {
  return page.locator('.form-error[role="alert"]');
}

/** Waits until a submitted form led to `next`; fails with the form's error if it showed one. */
async function expectLedTo(page: Page, next: string): Promise<void> {
  try {
    await expect(page).toHaveURL((url) => pathOf(url) === next);
  } catch (err) {
    const shown = await formError(page).allTextContents().catch(() => []);
    if (shown.length) throw new Error(`the form at ${page.url()} said: ${shown.join('; ')}`);
    // Not a page of ours at all (an API error such as bad_origin): say what it was.
    const body = (await page.locator('body').innerText().catch(() => '')).slice(0, 300);
    throw new Error(`the form led to ${page.url()} instead of ${next}, showing: ${body}`, { cause: err });
  }
}

/** The confirmation a server-rendered form shows once it did what was asked. */
export function formDone(page: Page): Locator {
  return page.locator('.form-done[role="status"]');
}

/** The sidebar's "Signed in as …" (a link to /account), or "Sign in (you are a guest)". */
export function whoAmI(page: Page): Locator {
  return page.locator('nav.sidebar .whoami');
}

/**
 * Creates the account `username` with the sign-in page's "Create an account" form and
 * waits until the server has sent the browser on to `next` (the lobby by default).
 */
export async function signUp(
  page: Page,
  username: string,
  password: string = PASSWORD,
  options: { displayName?: string; next?: string } = {},
): Promise<void> {
  const next = options.next ?? '/';
  await page.goto(loginPath(next));
  await page.locator('#signup-username').fill(username);
  if (options.displayName !== undefined) await page.locator('#signup-display').fill(options.displayName);
  await page.locator('#signup-password').fill(password);
  await page.getByRole('button', { name: 'Create account' }).click();
  await expectLedTo(page, next);
}

/** Signs in as `username` with the sign-in page's form and waits until it led to `next`. */
export async function signIn(
  page: Page,
  username: string,
  password: string = PASSWORD,
  next = '/',
): Promise<void> {
  await page.goto(loginPath(next));
  await page.locator('#login-username').fill(username);
  await page.locator('#login-password').fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await expectLedTo(page, next);
}

/** Signs out with the account page's "Sign out" button, which leads to the sign-in page. */
export async function signOut(page: Page): Promise<void> {
  await page.goto('/account');
  // Exactly: the sessions table's buttons are "Sign out the session from …".
  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  await expect(page).toHaveURL((url) => url.pathname === '/login');
}

/** Waits until the chat page shows it is signed in as `name`, online, with no nickname dialog. */
export async function expectSignedInChat(page: Page, name: string): Promise<void> {
  await expect(whoAmI(page)).toHaveText(`Signed in as ${name}`);
  await expectOnline(page);
  await expect(page.locator('#nick-input')).toHaveCount(0);
}

/**
 * A fresh browser signed up as `username` (display name = username unless given), online
 * in `room`, or in the lobby when no room is given.
 */
export async function openAsUser(
  browser: Browser,
  username: string,
  room?: string,
  options: { displayName?: string } = {},
): Promise<Page> {
  const page = await newUserPage(browser);
  await signUp(page, username, PASSWORD, { ...options, next: room ? `/r/${room}` : '/' });
  await expectSignedInChat(page, options.displayName ?? username);
  if (room) await expectInRoom(page, room);
  return page;
}

/** Makes `room` with the "New room" page and waits until its owner is in it. */
export async function createRoom(
  page: Page,
  room: string,
  options: { visibility?: 'public' | 'private'; topic?: string } = {},
): Promise<void> {
  await page.goto('/rooms/new');
  await page.locator('#room-name').fill(room);
  await page.locator(`input[name="visibility"][value="${options.visibility ?? 'public'}"]`).check();
  if (options.topic) await page.locator('#room-topic').fill(options.topic);
  await page.getByRole('button', { name: 'Create room' }).click();
  await expectInRoom(page, room);
}

/** Opens `room`'s settings page (in the page's browser, so with its sign-in). */
export async function openSettings(page: Page, room: string): Promise<void> {
  await page.goto(`/r/${room}/settings`);
  await expect(page.getByRole('heading', { level: 1 })).toHaveText(`#${room} settings`);
}

/** A row of the settings page's Members table. */
export function memberRow(page: Page, username: string): Locator {
  return page.locator(`tr[data-member="${username}"]`);
}

/** Invites `username` to `room` with its settings page's "Invite" form. */
export async function inviteToRoom(page: Page, room: string, username: string): Promise<void> {
  await openSettings(page, room);
  await page.locator('#invite-username').fill(username);
  await page.getByRole('button', { name: 'Invite', exact: true }).click();
  await expect(formDone(page)).toHaveText('Done.');
}

/** Applies `action` to `username` in `room` with its settings page's "Moderate someone" form. */
export async function moderate(
  page: Page,
  room: string,
  username: string,
  action: 'kick' | 'ban' | 'unban' | 'mute' | 'unmute',
): Promise<void> {
  await openSettings(page, room);
  await page.locator('#moderate-username').fill(username);
  await page.locator('#moderate-action').selectOption(action);
  await page.getByRole('button', { name: 'Apply' }).click();
  await expect(formDone(page)).toHaveText('Done.');
}

/** The room's notice ("You were removed from #…", a refused join, …). */
export function notice(page: Page): Locator {
  return page.getByTestId('notice');
}

/** The repository's root: the server's working directory under `cargo leptos`. */
const REPO_ROOT = resolve(__dirname, '..', '..');

/**
 * The server's admin CLI and database, when this run can reach them: the suite is not
 * pointed at another server (CONFAB_BASE_URL) and a built binary is there. The database
 * is CONFAB_DB (which `cargo leptos end-to-end` passes to the server and to Playwright
 * alike), else the server's default, relative to the repository's root.
 */
function adminCli(): { binary: string; db: string } | null {
  if (process.env.CONFAB_BASE_URL) return null;
  const built = ['debug', 'release']
    .map((profile) => resolve(REPO_ROOT, 'target', profile, 'confab'))
    .filter((path) => existsSync(path))
    // The newest build is the one the server runs.
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  const db = resolve(REPO_ROOT, process.env.CONFAB_DB ?? 'confab.db');
  // A missing file is not the running server's database (and the CLI would make one).
  if (built.length === 0 || !existsSync(db)) return null;
  return { binary: built[0], db };
}

/** Why `createAdmin` cannot work in this run, or null when it can. */
export function adminUnavailable(): string | null {
  return adminCli() ? null : 'needs the server\'s own database and admin CLI (not with CONFAB_BASE_URL)';
}

/**
 * Makes the admin account `username` with the server's CLI (`confab admin create-user
 * --admin`, which works on a running server's database): a known admin whichever
 * journey signed up first. Sign in with `signIn` afterwards.
 */
export async function createAdmin(username: string, password: string = PASSWORD): Promise<void> {
  const cli = adminCli();
  if (!cli) throw new Error(`createAdmin: ${adminUnavailable()}`);
  await execFileAsync(cli.binary, ['admin', 'create-user', '--username', username, '--admin'], {
    env: { ...process.env, CONFAB_DB: cli.db, CONFAB_PASSWORD: password, CONFAB_LOG: 'warn' },
    timeout: 20_000,
  });
}

// ---------------------------------------------------------------------------------------
// Conversations: message actions, reactions, replies, search

/** The acknowledged message with this `data-seq` (also while it is being edited). */
export function messageBySeq(page: Page, seq: number | string): Locator {
  return page.getByTestId('messages').locator(`li.message:not(.pending)[data-seq="${seq}"]`);
}

/** The `data-seq` of a message, as a number. */
export async function seqOf(message: Locator): Promise<number> {
  return Number(await message.getAttribute('data-seq'));
}

/**
 * One of a message's action buttons ("Reply", "React", "Edit", "Delete"). They are in the
 * DOM but `visibility: hidden` until the message is hovered or has focus.
 */
export function messageAction(message: Locator, name: 'Reply' | 'React' | 'Edit' | 'Delete'): Locator {
  return message.locator('div.actions[role="group"][aria-label="Message actions"] > button', { hasText: exactly(name) });
}

/** Hovers `message` (which shows its actions) and clicks its action `name`. */
export async function clickMessageAction(message: Locator, name: 'Reply' | 'React' | 'Edit' | 'Delete'): Promise<void> {
  await message.hover();
  await messageAction(message, name).click();
}

/** The room's emoji picker (one per room; hidden while closed). */
export function emojiPicker(page: Page): Locator {
  return page.getByRole('dialog', { name: 'Pick a reaction' });
}

/** Opens the picker on `message`, types `search` into it and picks the first match with Enter. */
export async function reactTo(page: Page, message: Locator, search: string): Promise<void> {
  await clickMessageAction(message, 'React');
  const picker = emojiPicker(page);
  await expect(picker).toBeVisible();
  await picker.getByLabel('Search emoji').fill(search);
  await picker.getByLabel('Search emoji').press('Enter');
  await expect(picker).toBeHidden();
}

/** The reaction toggle under `message` for `emoji` (its text is "<emoji> <count>"). */
export function reactionButton(message: Locator, emoji: string): Locator {
  return message
    .locator('div.reactions[aria-label="Reactions"] button.reaction')
    .filter({ hasText: new RegExp(`^${emoji.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\d+$`) });
}

/** A message's reply quote: a button naming the original's author and first line. */
export function replyQuote(message: Locator): Locator {
  return message.locator('button.quote');
}

/** Types into the sidebar's search box and submits it; waits for the results page. */
export async function searchMessages(page: Page, query: string): Promise<void> {
  await page.locator('#search-q').fill(query);
  await page.getByRole('search').getByRole('button', { name: 'Search' }).click();
  await expect(page).toHaveURL((url) => url.pathname === '/search' && url.searchParams.get('q') === query);
  await expect(page.getByRole('heading', { name: 'Search messages', level: 1 })).toBeVisible();
}
