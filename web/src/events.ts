/** /events: a live tail of the event log, with a topic filter and a pause button. */
import { connect, type HeraldConnection, type HeraldEvent } from '../../src/client/index.ts';

const MAX_ROWS = 200;
const form = document.querySelector<HTMLFormElement>('#filter')!;
const topicEl = document.querySelector<HTMLInputElement>('#topic')!;
const pauseEl = document.querySelector<HTMLButtonElement>('#pause')!;
const list = document.querySelector<HTMLOListElement>('#events')!;
const stateEl = document.querySelector<HTMLElement>('#connection')!;
const pendingEl = document.querySelector<HTMLElement>('#pending')!;

let conn: HeraldConnection | null = null;
let paused = false;
let held: HeraldEvent[] = [];

function show(e: HeraldEvent): void {
  const li = document.createElement('li');
  li.dataset.id = String(e.id);
  const code = document.createElement('code');
  code.textContent = `#${e.id} ${e.topic} ${e.type} ${JSON.stringify(e.data).slice(0, 300)}`;
  li.append(code);
  list.prepend(li);
  while (list.children.length > MAX_ROWS) list.lastElementChild!.remove();
}

function follow(topics: string[]): void {
  conn?.close();
  list.replaceChildren();
  held = [];
  conn = connect({
    url: location.origin,
    topics,
    since: 'now',
    onEvent: (e) => {
      if (paused) {
        held.push(e);
        pendingEl.textContent = `${held.length} new while paused`;
      } else show(e);
    },
    onStateChange: (s) => (stateEl.textContent = s === 'open' ? 'live' : s),
    onError: (err) => (stateEl.textContent = `stopped: ${err.message}`),
  });
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  follow(topicEl.value.split(/[\s,]+/).filter(Boolean));
});
pauseEl.addEventListener('click', () => {
  paused = !paused;
  pauseEl.textContent = paused ? 'Resume' : 'Pause';
  pauseEl.setAttribute('aria-pressed', String(paused));
  if (!paused) {
    for (const e of held) show(e);
    held = [];
    pendingEl.textContent = '';
  }
});
follow(topicEl.value.split(/[\s,]+/).filter(Boolean));
