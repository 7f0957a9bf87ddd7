// Kiln's web UI: a small single-page app over the /v1 API of the same origin. No framework:
// each page is a function that renders into <main> and polls while it is shown. Text from
// the API (logs above all) only ever becomes text nodes, never HTML.

const TOKEN_KEY = 'kiln.token';
/** How many bytes of a log are fetched at a time, and where a big log starts. */
const WINDOW = 256 * 1024;
/** At most this many lines of one log are in the page; older ones are dropped (and can be loaded again). */
const MAX_LINES = 3000;
/** Seconds a log read waits for new bytes (the API allows up to 25). */
const WAIT = 20;

const main = document.getElementById('main');
const signout = document.getElementById('signout');
let page = new AbortController();

class Unauthorized extends Error {}
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// ---------- small helpers ----------

/** An element with attributes (`text` sets its text, `on*` adds a listener) and children. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'hidden' || k === 'checked' || k === 'disabled') e[k] = Boolean(v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const enc = encodeURIComponent;
const quiet = (e) => e instanceof Unauthorized || e?.name === 'AbortError';

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

const when = (ms) => (ms ? new Date(ms).toLocaleString() : '—');
const ended = (s) => !['pending', 'running'].includes(s);
const badge = (s) => el('span', { class: `status s-${s}`, text: s });

function title(text) {
  document.title = `${text} · Kiln`;
  return el('h1', { text });
}

// ---------- the API ----------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** A request to the API with the token; a 401 sends the person back to the sign-in form. */
async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  headers.set('Authorization', `Bearer ${token()}`);
  const resp = await fetch(path, { cache: 'no-store', ...opts, headers });
  if (resp.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    signIn('That token was refused: sign in again.');
    throw new Unauthorized();
  }
  return resp;
}

async function errorOf(resp) {
  try {
    const body = await resp.json();
    return [body.message, ...(body.details || []).map((d) => d.message || JSON.stringify(d))].filter(Boolean).join('\n');
  } catch {
    return `HTTP ${resp.status}`;
  }
}

async function json(path, opts = {}) {
  const resp = await api(path, opts);
  if (!resp.ok) throw new ApiError(resp.status, await errorOf(resp));
  return resp.json();
}

/** Calls `fn` now and then every `ms` until the page changes or `fn` returns true; errors are shown in `status`. */
async function every(ms, signal, status, fn) {
  while (!signal.aborted) {
    try {
      if (await fn()) return;
      status.textContent = '';
    } catch (e) {
      if (quiet(e)) return;
      status.textContent = `Could not refresh: ${e.message}`;
    }
    await sleep(ms, signal);
  }
}

// ---------- sign-in and routing ----------

function signIn(message) {
  page.abort();
  page = new AbortController();
  signout.hidden = true;
  document.title = 'Sign in · Kiln';
  const input = el('input', { name: 'token', id: 'token', type: 'password', autocomplete: 'current-password', required: true });
  const form = el('form', { class: 'panel signin', 'aria-labelledby': 'signin-title' },
    el('h1', { id: 'signin-title', text: 'Sign in to Kiln' }),
    message ? el('p', { class: 'error', role: 'alert', text: message }) : null,
    el('label', { for: 'token', text: 'Admin token' }),
    input,
    el('button', { type: 'submit', class: 'primary', text: 'Sign in' }),
    el('p', { class: 'muted', text: 'The token stays in this tab (session storage) and is sent only to this server.' }));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (!input.value.trim()) return;
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    start();
  });
  main.replaceChildren(form);
  input.focus();
}

signout.addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  signIn();
});

function start() {
  if (!token()) return signIn();
  page.abort();
  page = new AbortController();
  const signal = page.signal;
  signout.hidden = false;
  main.replaceChildren();
  const p = location.pathname;
  const dec = decodeURIComponent;
  let m;
  let render;
  if (p === '/' || p === '') render = () => homePage(signal);
  else if ((m = p.match(/^\/repos\/([^/]+)\/([^/]+)\/?$/))) render = () => repoPage(dec(m[1]), dec(m[2]), signal);
  else if ((m = p.match(/^\/builds\/([^/]+)\/?$/))) render = () => buildPage(dec(m[1]), signal);
  else if (p === '/images' || p === '/images/') render = () => imagesPage(signal);
  else render = async () => main.append(title('Not found'), el('p', { text: 'No page here.' }), el('a', { href: '/', text: 'Repositories' }));
  render().catch((e) => {
    if (quiet(e)) return;
    main.append(el('p', { class: 'error', role: 'alert', text: e.message }));
  });
}

// ---------- repositories and builds ----------

function buildsTable(builds) {
  if (!builds.length) return el('p', { class: 'muted', text: 'No builds yet.' });
  return el('div', { class: 'scroll' }, el('table', { class: 'builds' },
    el('thead', {}, el('tr', {}, ['Build', 'Status', 'Created', 'Duration'].map((h) => el('th', { scope: 'col', text: h })))),
    el('tbody', {}, builds.map((b) => el('tr', {},
      el('td', {}, el('a', { href: `/builds/${enc(b.id)}`, class: 'mono', text: b.id })),
      el('td', {}, badge(b.status)),
      el('td', { text: when(b.created_ms) }),
      el('td', { text: b.finished_ms ? duration(b.finished_ms - b.created_ms) : ended(b.status) ? '—' : `running ${duration(Date.now() - b.created_ms)}` }))))));
}

const repoPath = (full) => `/repos/${full.split('/').map(enc).join('/')}`;

async function homePage(signal) {
  const input = el('input', { name: 'repo', id: 'repo', placeholder: 'org/repo', pattern: '[^/]+/[^/]+', required: true });
  const open = el('form', { class: 'row panel', 'aria-label': 'Open a repository' },
    el('label', { for: 'repo', text: 'Open a repository' }), input, el('button', { type: 'submit', text: 'Open' }));
  open.addEventListener('submit', (e) => {
    e.preventDefault();
    location.href = repoPath(input.value.trim());
  });
  const list = el('div', {}, el('p', { class: 'muted', text: 'Loading…' }));
  const status = el('p', { class: 'error', role: 'status' });
  main.append(title('Repositories'), open, status, list);
  let last = '';
  await every(5000, signal, status, async () => {
    const { repos } = await json('/v1/repos', { signal });
    const sections = await Promise.all(repos.map(async (r) => {
      const { builds } = await json(`/v1/repos/${r.repo.split('/').map(enc).join('/')}/builds?limit=5`, { signal });
      return { r, builds };
    }));
    const key = JSON.stringify(sections);
    if (key === last) return false;
    last = key;
    list.replaceChildren(...(sections.length
      ? sections.map(({ r, builds }) => el('section', { class: 'panel' },
        el('h2', {}, el('a', { href: repoPath(r.repo), text: r.repo }), ' ', el('span', { class: 'muted', text: `(${r.provider})` })),
        buildsTable(builds)))
      : [el('p', { class: 'muted', text: 'No repositories are registered. Builds submitted with `kiln submit` are under their org/repo: open one above.' })]));
    return false;
  });
}

async function repoPage(org, repo, signal) {
  const list = el('div', {}, el('p', { class: 'muted', text: 'Loading…' }));
  const status = el('p', { class: 'error', role: 'status' });
  main.append(title(`${org}/${repo}`), el('p', { class: 'muted', text: 'Builds, newest first; refreshed every 3 seconds.' }), status, list);
  let last = '';
  await every(3000, signal, status, async () => {
    const { builds } = await json(`/v1/repos/${enc(org)}/${enc(repo)}/builds?limit=50`, { signal });
    const key = JSON.stringify(builds);
    if (key !== last) {
      last = key;
      list.replaceChildren(buildsTable(builds));
    }
    return false;
  });
}

// ---------- images ----------

async function imagesPage(signal) {
  const status = el('p', { class: 'error', role: 'status' });
  const note = el('p', { role: 'status', 'aria-live': 'polite' });
  const table = el('div', { class: 'scroll' }, el('p', { class: 'muted', text: 'Loading…' }));
  main.append(title('Images'), el('p', { class: 'muted', text: 'Each image for each provider: the latest build\'s status. Refreshed every 3 seconds.' }), status, note, table);

  async function buildMissing(name, button) {
    button.disabled = true;
    try {
      const resp = await api(`/v1/images/${enc(name)}/builds`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}', signal });
      if (resp.status === 201) {
        const a = await resp.json();
        note.replaceChildren(`Building ${name} for ${a.providers.join(', ')}: `, el('a', { href: `/builds/${enc(a.id)}`, text: a.id }));
      } else if (resp.status === 409) {
        note.replaceChildren(`${name}: nothing is missing or failed.`);
      } else {
        note.replaceChildren(el('span', { class: 'error', text: `${name}: ${await errorOf(resp)}` }));
      }
    } catch (e) {
      if (!quiet(e)) note.replaceChildren(el('span', { class: 'error', text: e.message }));
    } finally {
      button.disabled = false;
    }
  }

  let last = '';
  await every(3000, signal, status, async () => {
    const { images } = await json('/v1/images', { signal });
    const key = JSON.stringify(images);
    if (key === last) return false;
    last = key;
    if (!images.length) {
      table.replaceChildren(el('p', { class: 'muted', text: 'No images yet: a pipeline declares them under `images:`.' }));
      return false;
    }
    const providers = [...new Set(images.flatMap((i) => i.providers.map((p) => p.provider)))].sort();
    const cell = (r) => {
      if (!r) return el('td', { class: 'cell muted', text: 'missing' });
      return el('td', { class: `cell c-${r.status}` },
        badge(r.status),
        el('progress', { class: 'bar', max: 100, value: r.percent, 'aria-label': `${r.image} on ${r.provider}: ${r.percent}%` }),
        el('span', { class: 'muted', text: ` ${r.percent}%` }),
        r.error ? el('div', { class: 'error', text: r.error }) : null,
        el('div', {}, 'build ', el('a', { href: `/builds/${enc(r.build)}`, class: 'mono', text: r.build })),
        r.uri ? el('div', { class: 'uri mono', text: r.uri }) : null);
    };
    table.replaceChildren(el('table', { class: 'matrix' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Image' }), providers.map((p) => el('th', { scope: 'col', text: p })), el('th', { scope: 'col', text: '' }))),
      el('tbody', {}, images.map((i) => {
        const button = el('button', { type: 'button', text: 'Build missing', 'aria-label': `Build missing providers of ${i.name}` });
        button.addEventListener('click', () => buildMissing(i.name, button));
        return el('tr', {},
          el('th', { scope: 'row', class: 'mono', text: i.name }),
          providers.map((p) => cell(i.providers.find((r) => r.provider === p))),
          el('td', {}, button));
      }))));
    return false;
  });
}

// ---------- ANSI and ::kiln:: lines ----------

const FRESH = Object.freeze({ b: false, d: false, i: false, u: false, fg: null, bg: null });

/** The SGR state after the codes of one `ESC[...m`. */
function sgr(state, params) {
  const s = { ...state };
  const codes = params === '' ? [0] : params.split(';').map((x) => Number(x) || 0);
  for (let k = 0; k < codes.length; k++) {
    const c = codes[k];
    if (c === 0) Object.assign(s, FRESH);
    else if (c === 1) s.b = true;
    else if (c === 2) s.d = true;
    else if (c === 3) s.i = true;
    else if (c === 4) s.u = true;
    else if (c === 22) { s.b = false; s.d = false; }
    else if (c === 23) s.i = false;
    else if (c === 24) s.u = false;
    else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) s.fg = c;
    else if (c === 39) s.fg = null;
    else if (c >= 40 && c <= 47) s.bg = c;
    else if (c >= 100 && c <= 107) s.bg = c - 60;
    else if (c === 49) s.bg = null;
    else if (c === 38 || c === 48) {
      // 256-colour (5;n): the first 16 map onto the basic palette; the rest and RGB are skipped.
      if (codes[k + 1] === 5) {
        const n = codes[k + 2];
        if (n !== undefined && n < 16) {
          const base = n < 8 ? 30 + n : 90 + n - 8;
          if (c === 38) s.fg = base; else s.bg = n < 8 ? 40 + n : 40 + n - 8;
        }
        k += 2;
      } else if (codes[k + 1] === 2) k += 4;
    }
  }
  return s;
}

function classes(s) {
  const c = [];
  if (s.b) c.push('a-b');
  if (s.d) c.push('a-d');
  if (s.i) c.push('a-i');
  if (s.u) c.push('a-u');
  if (s.fg) c.push(`f${s.fg}`);
  if (s.bg) c.push(`b${s.bg}`);
  return c.join(' ');
}

// eslint-disable-next-line no-control-regex
const CSI = /\x1b\[([0-9;?]*)([@-~])/g;
// eslint-disable-next-line no-control-regex
const STRIP = /\x1b\[[0-9;?]*[@-~]|\x1b/g;

/** One log line as an element, from the SGR state before it; returns the element and the state after. */
function renderLine(raw, state) {
  const div = document.createElement('div');
  div.className = 'ln';
  // A carriage return redraws the line (progress bars): show what was drawn last.
  const parts = raw.split('\r');
  let text = parts.pop();
  while (text === '' && parts.length) text = parts.pop();
  const plain = text.replace(STRIP, '');
  const kiln = plain.match(/^::kiln::(\S+)(.*)$/);
  if (kiln) {
    div.classList.add('kiln');
    div.append(el('span', { class: 'kw', text: `::kiln::${kiln[1]}` }), kiln[2]);
    return { div, state };
  }
  let at = 0;
  let m;
  CSI.lastIndex = 0;
  const put = (t) => {
    if (!t) return;
    const c = classes(state);
    div.append(c ? el('span', { class: c, text: t }) : document.createTextNode(t));
  };
  while ((m = CSI.exec(text))) {
    put(text.slice(at, m.index).replace(STRIP, ''));
    if (m[2] === 'm') state = sgr(state, m[1]);
    at = CSI.lastIndex;
  }
  put(text.slice(at).replace(STRIP, ''));
  return { div, state };
}

const decoder = new TextDecoder('utf-8');

/** Byte-level line split: `\n` is never inside a UTF-8 sequence, so each line decodes alone. */
function splitLines(bytes) {
  const lines = [];
  let from = 0;
  for (;;) {
    const nl = bytes.indexOf(10, from);
    if (nl < 0) break;
    lines.push(bytes.subarray(from, nl + 1));
    from = nl + 1;
  }
  return { lines, rest: bytes.subarray(from) };
}

function concat(a, b) {
  if (!a.length) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

const kib = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`);

// ---------- one log, tailed ----------

/**
 * One stream's log in a <details>: opened, it reads from the end of what is stored (the
 * last WINDOW bytes of a big log) and long-polls for more; closed, it stops. Only the
 * last MAX_LINES lines are kept in the page; earlier bytes load on request, a window at a time.
 */
class LogView {
  constructor(name, url, signal) {
    this.name = name;
    this.url = url;
    this.signal = signal;
    this.known = 0; // bytes stored, from the log list
    this.lo = null; // the byte offset of the first line in the page
    this.hi = null; // the next byte to read
    this.lines = []; // [{div, n}]: each line in the page and its length in bytes
    this.rest = new Uint8Array(0); // an unfinished last line
    this.restDiv = null;
    this.state = FRESH;
    this.skipPartial = false;
    this.complete = false;
    this.ctrl = null;
    this.userToggled = false;

    this.summaryText = el('span', { class: 'name', text: name });
    this.summaryMeta = el('span', { class: 'meta' });
    this.progress = el('span', { class: 'muted', role: 'status' });
    this.follow = el('input', { type: 'checkbox', checked: true, id: `follow-${name}` });
    this.earlier = el('button', { type: 'button', text: 'Load earlier', hidden: true, onclick: () => this.loadEarlier() });
    this.raw = el('a', { href: url, text: 'Raw log', onclick: (e) => this.download(e) });
    this.box = el('div', { class: 'log', tabindex: 0, role: 'log', 'aria-label': `log of ${name}`, 'data-log': name });
    this.box.addEventListener('scroll', () => {
      if (this.box.scrollTop + this.box.clientHeight < this.box.scrollHeight - 40) this.follow.checked = false;
      if (this.box.scrollTop === 0 && this.lo > 0 && !this.loading) this.loadEarlier();
    });
    this.follow.addEventListener('change', () => this.follow.checked && this.scrollEnd());
    this.details = el('details', { 'data-stream': name, id: `log-${name}` },
      el('summary', {}, this.summaryText, this.summaryMeta),
      el('div', { class: 'logbar' },
        el('label', {}, this.follow, ' Follow the end'), this.earlier, this.raw, this.progress),
      this.box);
    this.details.addEventListener('toggle', () => {
      if (this.details.open) this.start(); else this.stop();
    });
    this.details.querySelector('summary').addEventListener('click', () => { this.userToggled = true; });
  }

  meta(parts) {
    this.summaryMeta.replaceChildren(...parts);
  }

  open() {
    if (!this.details.open) this.details.open = true;
  }

  start() {
    if (this.ctrl || this.complete || this.signal.aborted) return;
    this.ctrl = new AbortController();
    const stop = () => this.ctrl?.abort();
    this.signal.addEventListener('abort', stop, { once: true });
    this.tail(this.ctrl.signal).finally(() => {
      this.ctrl = null;
      this.signal.removeEventListener('abort', stop);
    });
  }

  stop() {
    this.ctrl?.abort();
  }

  /** Where the bytes start: the end of a big log, less a window; the start otherwise. */
  jumpTo(offset) {
    this.lo = offset;
    this.hi = offset;
    this.skipPartial = offset > 0;
    this.rest = new Uint8Array(0);
    this.restDiv?.remove();
    this.restDiv = null;
    this.state = FRESH;
    for (const l of this.lines) l.div.remove();
    this.lines = [];
    this.earlier.hidden = offset === 0;
  }

  /** The log list says `len` bytes are stored: far behind while following, skip to the end. */
  stored(len) {
    this.known = Math.max(this.known, len);
    if (this.ctrl && this.follow.checked && this.hi !== null && len - this.hi > 4 * WINDOW) this.jumpPending = len - WINDOW;
  }

  async tail(signal) {
    if (this.hi === null) this.jumpTo(this.known > WINDOW ? this.known - WINDOW : 0);
    let failures = 0;
    while (!signal.aborted) {
      if (this.jumpPending !== undefined) {
        const to = this.jumpPending;
        this.jumpPending = undefined;
        if (to > this.hi) this.jumpTo(to);
      }
      const sep = this.url.includes('?') ? '&' : '?';
      try {
        const resp = await api(`${this.url}${sep}offset=${this.hi}&wait=${WAIT}&max=${WINDOW}`, { signal });
        if (!resp.ok) throw new ApiError(resp.status, await errorOf(resp));
        const bytes = new Uint8Array(await resp.arrayBuffer());
        const next = Number(resp.headers.get('kiln-next-offset'));
        const complete = resp.headers.get('kiln-complete') === 'true';
        this.append(bytes);
        this.hi = Number.isFinite(next) && next >= this.hi ? next : this.hi + bytes.length;
        failures = 0;
        this.progress.textContent = '';
        if (complete) {
          this.finish();
          return;
        }
      } catch (e) {
        if (quiet(e) || signal.aborted) return;
        failures += 1;
        // Resume at the same offset: nothing read is read twice, nothing is lost.
        this.progress.textContent = `Reconnecting (${e.message})…`;
        await sleep(Math.min(500 * failures, 5000), signal);
      }
    }
  }

  append(bytes) {
    if (!bytes.length) return;
    if (this.skipPartial) {
      // A window that starts inside a line: drop the part before the first whole line.
      const nl = bytes.indexOf(10);
      if (nl < 0) {
        this.lo += bytes.length;
        return;
      }
      this.lo += nl + 1;
      bytes = bytes.subarray(nl + 1);
      this.skipPartial = false;
    }
    const { lines, rest } = splitLines(concat(this.rest, bytes));
    this.restDiv?.remove();
    this.restDiv = null;
    // Lines that would be dropped at once are never rendered.
    const drop = Math.max(0, lines.length - MAX_LINES);
    for (let k = 0; k < drop; k++) this.lo += lines[k].length;
    if (drop) {
      for (const l of this.lines) { this.lo += l.n; l.div.remove(); }
      this.lines = [];
      this.state = FRESH;
    }
    const frag = document.createDocumentFragment();
    for (let k = drop; k < lines.length; k++) {
      const { div, state } = renderLine(decoder.decode(lines[k].subarray(0, lines[k].length - 1)), this.state);
      this.state = state;
      this.lines.push({ div, n: lines[k].length });
      frag.append(div);
    }
    this.rest = rest.slice();
    if (rest.length) {
      this.restDiv = renderLine(decoder.decode(rest), this.state).div;
      frag.append(this.restDiv);
    }
    this.box.append(frag);
    this.trim();
    this.earlier.hidden = this.lo <= 0;
    if (this.lo > 0) this.earlier.textContent = `Load earlier (${kib(this.lo)} before)`;
    if (this.follow.checked) this.scrollEnd();
  }

  trim(limit = MAX_LINES) {
    const extra = this.lines.length - limit;
    if (extra <= 0) return;
    for (const l of this.lines.splice(0, extra)) {
      this.lo += l.n;
      l.div.remove();
    }
  }

  finish() {
    this.complete = true;
    if (this.rest.length) {
      this.lines.push({ div: this.restDiv, n: this.rest.length });
      this.rest = new Uint8Array(0);
      this.restDiv = null;
    }
    if (!this.lines.length && this.lo === 0) this.box.replaceChildren(el('div', { class: 'gap', text: '(empty)' }));
  }

  scrollEnd() {
    this.box.scrollTop = this.box.scrollHeight;
  }

  /** The window before the first line in the page, put above it (the scroll position kept). */
  async loadEarlier() {
    if (this.loading || !(this.lo > 0)) return;
    this.loading = true;
    this.follow.checked = false;
    try {
      const from = Math.max(0, this.lo - WINDOW);
      const sep = this.url.includes('?') ? '&' : '?';
      const resp = await api(`${this.url}${sep}offset=${from}&max=${this.lo - from}`, { signal: this.signal });
      if (!resp.ok) throw new ApiError(resp.status, await errorOf(resp));
      let bytes = new Uint8Array(await resp.arrayBuffer());
      let start = from;
      if (from > 0) {
        const nl = bytes.indexOf(10);
        if (nl < 0) return;
        start += nl + 1;
        bytes = bytes.subarray(nl + 1);
      }
      const { lines } = splitLines(bytes);
      const before = this.box.scrollHeight;
      const frag = document.createDocumentFragment();
      const added = [];
      let state = FRESH;
      for (const line of lines) {
        const r = renderLine(decoder.decode(line.subarray(0, line.length - 1)), state);
        state = r.state;
        added.push({ div: r.div, n: line.length });
        frag.append(r.div);
      }
      this.box.prepend(frag);
      this.lines = added.concat(this.lines);
      this.lo = start;
      this.box.scrollTop += this.box.scrollHeight - before;
      this.earlier.hidden = this.lo <= 0;
      this.earlier.textContent = `Load earlier (${kib(this.lo)} before)`;
    } catch (e) {
      if (!quiet(e)) this.progress.textContent = `Could not load: ${e.message}`;
    } finally {
      this.loading = false;
    }
  }

  /** The raw log as a file: read through in 8 MiB windows with the token, never a token in a URL. */
  async download(e) {
    e.preventDefault();
    const parts = [];
    let offset = 0;
    const sep = this.url.includes('?') ? '&' : '?';
    try {
      for (;;) {
        this.progress.textContent = `Downloading… ${kib(offset)}`;
        const resp = await api(`${this.url}${sep}offset=${offset}&max=${8 << 20}`, { signal: this.signal });
        if (!resp.ok) throw new ApiError(resp.status, await errorOf(resp));
        const b = await resp.blob();
        parts.push(b);
        const next = Number(resp.headers.get('kiln-next-offset'));
        if (!b.size || !(next > offset)) break;
        offset = next;
      }
      const a = el('a', { href: URL.createObjectURL(new Blob(parts, { type: 'text/plain' })), download: `${this.name.replace(/[/#]/g, '_')}.log` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60000);
      this.progress.textContent = '';
    } catch (err) {
      if (!quiet(err)) this.progress.textContent = `Could not download: ${err.message}`;
    }
  }
}

// ---------- the build page ----------

function stageGraph(stages, onPick) {
  const byName = new Map(stages.map((s) => [s.name, s]));
  const level = new Map();
  const depth = (s, seen = new Set()) => {
    if (level.has(s.name)) return level.get(s.name);
    seen.add(s.name);
    let l = 0;
    for (const n of s.needs || []) {
      const dep = byName.get(n);
      if (dep && !seen.has(n)) l = Math.max(l, depth(dep, seen) + 1);
    }
    level.set(s.name, l);
    return l;
  };
  stages.forEach((s) => depth(s));
  const cols = [];
  for (const s of stages) (cols[level.get(s.name)] ||= []).push(s);
  const boxes = new Map();
  const graph = el('div', { class: 'graph', role: 'group', 'aria-label': 'stages' });
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('aria-hidden', 'true');
  graph.append(svg);
  for (const col of cols.filter(Boolean)) {
    graph.append(el('div', { class: 'col' }, col.map((s) => {
      const instance = s.name.includes('#');
      const b = el('button', {
        type: 'button', class: `stage s-${s.status}`, 'data-stage': s.name,
        'aria-label': `stage ${s.name}: ${s.status}${s.needs?.length ? `, needs ${s.needs.join(', ')}` : ''}`,
        onclick: () => onPick(s),
      },
      el('span', { class: 'name', text: s.name }),
      el('span', { class: 'meta' }, badge(s.status), ' ', duration(s.duration_ms),
        instance ? el('span', { class: 'muted', text: ' · started by an event' }) : null,
        s.attempt > 1 ? el('span', { class: 'muted', text: ` · attempt ${s.attempt}` }) : null),
      s.reason ? el('span', { class: 'meta muted', text: s.reason }) : null);
      boxes.set(s.name, b);
      return b;
    })));
  }
  // Edges once laid out: from the right of each need to the left of the stage.
  const draw = () => {
    const origin = graph.getBoundingClientRect();
    svg.setAttribute('width', graph.scrollWidth);
    svg.setAttribute('height', graph.scrollHeight);
    svg.replaceChildren();
    for (const s of stages) {
      const to = boxes.get(s.name)?.getBoundingClientRect();
      for (const n of s.needs || []) {
        const from = boxes.get(n)?.getBoundingClientRect();
        if (!from || !to) continue;
        const x1 = from.right - origin.left + graph.scrollLeft;
        const y1 = from.top + from.height / 2 - origin.top;
        const x2 = to.left - origin.left + graph.scrollLeft;
        const y2 = to.top + to.height / 2 - origin.top;
        const p = document.createElementNS('http://www.w3.org/2000/svg', 'path');
        const mid = (x1 + x2) / 2;
        p.setAttribute('d', `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`);
        svg.append(p);
      }
    }
  };
  requestAnimationFrame(draw);
  return { graph, draw };
}

async function buildPage(id, signal) {
  const base = `/v1/builds/${enc(id)}`;
  const status = el('p', { class: 'error', role: 'status' });
  const head = el('div', { class: 'panel' });
  const graphBox = el('div');
  const stepsBox = el('div', { class: 'scroll' });
  const logsBox = el('div', { class: 'logs' });
  const eventsBox = el('div');
  main.append(title(`Build ${id}`), status, head,
    el('h2', { text: 'Stages' }), graphBox,
    el('h2', { text: 'Steps' }), stepsBox,
    el('h2', { text: 'Logs' }), logsBox,
    el('h2', { text: 'Events' }), eventsBox);

  const views = new Map();
  const view = (name, url) => {
    if (!views.has(name)) {
      const v = new LogView(name, url, signal);
      views.set(name, v);
    }
    return views.get(name);
  };
  const pick = (s) => {
    const step = s.steps.find((t) => t.status === 'failed') || s.steps.find((t) => t.status === 'running') || s.steps[s.steps.length - 1];
    const v = step && views.get(`${s.name}/${step.name}`);
    if (!v) return;
    v.userToggled = true;
    v.open();
    v.details.scrollIntoView({ block: 'start' });
    v.details.querySelector('summary').focus();
  };

  let build = null;
  let graph = null;
  let cancelNote = el('span', { role: 'status' });
  const durationText = el('span');
  const tick = setInterval(() => {
    if (build && build.started_ms && !build.finished_ms) durationText.textContent = `${duration(Date.now() - build.started_ms)} (running)`;
  }, 1000);
  signal.addEventListener('abort', () => clearInterval(tick), { once: true });
  window.addEventListener('resize', () => graph?.draw(), { signal });

  const cancel = async (button) => {
    if (!window.confirm(`Cancel build ${id}? Running steps are stopped.`)) return;
    button.disabled = true;
    try {
      const resp = await api(`${base}/cancel`, { method: 'POST', signal });
      cancelNote.textContent = resp.status === 202 ? ' Cancel requested.' : ` ${await errorOf(resp)}`;
    } catch (e) {
      if (!quiet(e)) cancelNote.textContent = ` Could not cancel: ${e.message}`;
      button.disabled = false;
    }
  };

  const renderHead = (b) => {
    const g = b.git;
    const started = g
      ? el('span', {},
        `${g.event === 'pull_request' ? `pull request #${g.pull_request}` : g.event}`,
        g.branch ? ` on ${g.branch}` : g.tag ? ` of tag ${g.tag}` : '',
        g.base_branch ? ` into ${g.base_branch}` : '',
        ' at ', el('code', { text: g.commit.slice(0, 12), title: g.commit }),
        g.author ? ` by ${g.author}` : '',
        g.fork ? ' (from a fork)' : '',
        g.message ? el('div', { class: 'muted', text: g.message.split('\n')[0] }) : null)
      : el('span', { class: 'muted', text: 'submitted directly (no git event)' });
    durationText.textContent = b.duration_ms !== null && b.duration_ms !== undefined
      ? duration(b.duration_ms)
      : b.started_ms ? `${duration(Date.now() - b.started_ms)} (running)` : '—';
    const buttons = [];
    if (!ended(b.status)) {
      const button = el('button', { type: 'button', class: 'danger', id: 'cancel', text: 'Cancel build' });
      button.addEventListener('click', () => cancel(button));
      buttons.push(button);
    }
    head.replaceChildren(
      el('div', { class: 'row' }, el('span', { id: 'build-status' }, badge(b.status)), b.reason ? el('span', { class: 'muted', text: b.reason }) : null, ...buttons, cancelNote),
      el('dl', { class: 'facts' },
        el('dt', { text: 'Repository' }), el('dd', {}, el('a', { href: repoPath(b.repo), text: b.repo })),
        el('dt', { text: 'Started by' }), el('dd', {}, started),
        el('dt', { text: 'Created' }), el('dd', { text: when(b.created_ms) }),
        el('dt', { text: 'Duration' }), el('dd', {}, durationText),
        b.images.length ? [el('dt', { text: 'Images' }), el('dd', {}, b.images.map((i) => `${i.name} (${i.providers.join(', ')})`).join('; '), ' · ', el('a', { href: '/images', text: 'catalog' }))] : null));
  };

  const renderSteps = (b) => {
    stepsBox.replaceChildren(el('table', { class: 'steps' },
      el('thead', {}, el('tr', {}, ['Stage / step', 'Status', 'Exit code', 'Duration', 'Reason'].map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, b.stages.flatMap((s) => s.steps.map((t) => el('tr', { 'data-step': `${s.name}/${t.name}` },
        el('td', { class: 'mono', text: `${s.name} / ${t.name}` }),
        el('td', {}, badge(t.status)),
        el('td', { text: t.exit_code ?? '—' }),
        el('td', { text: duration(t.duration_ms) }),
        el('td', { class: 'muted', text: t.reason || '' })))))));
  };

  /** The log sections: init first, then each step in order, then services. */
  const renderLogs = (b, list) => {
    const len = new Map(list.map((l) => [l.name, l]));
    const order = [];
    const init = view('init', `${base}/logs/init`);
    init.meta([el('span', { class: 'muted', text: 'setup: workspace, checkout, environment' })]);
    order.push(init);
    const lastRan = b.stages.flatMap((s) => s.steps.filter((t) => ended(t.status) && t.status !== 'skipped').map((t) => `${s.name}/${t.name}`)).pop();
    for (const s of b.stages) {
      for (const t of s.steps) {
        const name = `${s.name}/${t.name}`;
        const v = view(name, `${base}/logs/${enc(s.name)}/${enc(t.name)}`);
        const was = v.lastStatus;
        v.lastStatus = t.status;
        v.meta([badge(t.status), t.exit_code !== null && t.exit_code !== undefined ? ` exit ${t.exit_code}` : '', ` ${duration(t.duration_ms)}`]);
        order.push(v);
        // What opens by itself: running and failed steps, the last step of an ended build,
        // and one named in the address (#log=stage/step); never one the person closed.
        if (!v.userToggled && was !== t.status) {
          const wanted = decodeURIComponent(location.hash.replace(/^#log=/, '')) === name;
          if (t.status === 'running' || t.status === 'failed' || wanted || (ended(b.status) && name === lastRan && !b.stages.some((x) => x.steps.some((y) => y.status === 'failed')))) {
            v.pendingOpen = true;
          }
        }
      }
    }
    for (const l of list) {
      if (l.kind !== 'service') continue;
      const v = view(l.name, `${base}/logs/${enc(l.stage)}/${enc(l.step)}`);
      v.meta([el('span', { class: 'muted', text: 'service' })]);
      order.push(v);
    }
    for (const v of order) v.stored(len.get(v.name)?.len || 0);
    const current = [...logsBox.children];
    if (current.length !== order.length || current.some((c, k) => c !== order[k].details)) logsBox.replaceChildren(...order.map((v) => v.details));
    if (!init.userToggled && !init.details.open && !init.opened) { init.opened = true; init.open(); init.start(); }
    // A browser holds about six connections to one host, and each live log holds one: at
    // most three open by themselves, so the page's own polls always get through.
    for (const v of order) {
      if (!v.pendingOpen) continue;
      const live = [...views.values()].filter((x) => x.ctrl && !x.complete).length;
      if (live >= 3) break;
      v.pendingOpen = false;
      v.open();
      v.start();
    }
  };

  // Events: numbered, filtered by type, read by cursor.
  const filter = el('select', { id: 'event-type', 'aria-label': 'event type' }, el('option', { value: '', text: 'All types' }));
  const rows = el('tbody');
  const types = new Set();
  eventsBox.append(el('div', { class: 'row' }, el('label', { for: 'event-type', text: 'Type' }), filter),
    el('div', { class: 'scroll' }, el('table', { class: 'events' },
      el('thead', {}, el('tr', {}, ['#', 'Time', 'Type', 'Subject', 'Data'].map((h) => el('th', { scope: 'col', text: h })))), rows)));
  const applyFilter = () => { for (const r of rows.children) r.hidden = Boolean(filter.value) && r.dataset.type !== filter.value; };
  filter.addEventListener('change', applyFilter);
  let after = 0;
  const readEvents = async () => {
    for (;;) {
      const page = await json(`${base}/events?after=${after}&limit=1000`, { signal });
      for (const e of page.events) {
        const ty = e.event.type;
        if (!types.has(ty)) {
          types.add(ty);
          const opts = [...types].sort().map((t) => el('option', { value: t, text: t }));
          const keep = filter.value;
          filter.replaceChildren(el('option', { value: '', text: 'All types' }), ...opts);
          filter.value = keep;
        }
        const data = e.event.data === undefined ? '' : JSON.stringify(e.event.data);
        rows.append(el('tr', { 'data-type': ty, hidden: Boolean(filter.value) && filter.value !== ty },
          el('td', { text: e.seq }),
          el('td', { text: e.event.time ? new Date(e.event.time).toLocaleTimeString() : '' }),
          el('td', { class: 'mono', text: ty }),
          el('td', { class: 'mono', text: e.event.subject || '' }),
          el('td', { class: 'data', text: data.length > 400 ? `${data.slice(0, 400)}…` : data })));
      }
      after = Math.max(after, page.next_after || after);
      if (page.events.length < 1000) return page.events.length;
    }
  };

  let lastKey = '';
  let quietRounds = 0;
  await every(1500, signal, status, async () => {
    const [b, logs] = await Promise.all([json(base, { signal }), json(`${base}/logs`, { signal })]);
    build = b;
    const key = JSON.stringify(b);
    if (key !== lastKey) {
      lastKey = key;
      renderHead(b);
      const g = stageGraph(b.stages, pick);
      graph = g;
      graphBox.replaceChildren(g.graph);
      renderSteps(b);
    }
    renderLogs(b, logs.logs);
    const fresh = await readEvents();
    // Once ended, one more round picks up the last events; then the page stops polling.
    if (ended(b.status) && b.stages.every((s) => ended(s.status))) {
      quietRounds = fresh ? 0 : quietRounds + 1;
      return quietRounds >= 2;
    }
    return false;
  });
}

start();
