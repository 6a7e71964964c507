/**
 * The group commit itself (src/group-commit.ts) with a write of the test's own: each flush is
 * recorded and held until the test settles it, so which items share a flush, and in which
 * order callers are answered, is exact. Against PostgreSQL it runs in
 * test/events/appender.test.ts (the group append) and test/jobs (the worker pool).
 */
import { describe, expect, it } from 'vitest';
import type { HeraldError } from '../src/errors.ts';
import { GroupCommit, type GroupCommitOptions } from '../src/group-commit.ts';

/** An item: its name, and what it counts toward the item and byte bounds. */
interface Item {
  readonly name: string;
  readonly count?: number;
  readonly bytes?: number;
}

/** One held flush: its items' names, and how to end it. */
interface Flush {
  readonly names: string[];
  /** Commits: each item's answer is `<name>!`. */
  commit(): void;
  fail(err: unknown): void;
}

/** A GroupCommit whose write records each flush and holds it until the test ends it. */
function held(opts: Partial<GroupCommitOptions<Item, string>> = {}) {
  const flushes: Flush[] = [];
  const waiting: { n: number; resolve: () => void }[] = [];
  const gc = new GroupCommit<Item, string>({
    write: (items) =>
      new Promise((resolve, reject) => {
        const names = items.map((i) => i.name);
        flushes.push({ names, commit: () => resolve(names.map((n) => `${n}!`)), fail: reject });
        for (const w of waiting.filter((w) => w.n === flushes.length)) w.resolve();
      }),
    count: (i) => i.count ?? 1,
    bytes: (i) => i.bytes ?? 0,
    maxItems: 100,
    ...opts,
  });
  /** Every flush's items so far. */
  const batches = () => flushes.map((f) => f.names);
  /** Resolves once the `n`th flush has started. */
  const started = (n: number) => new Promise<void>((resolve) => (flushes.length >= n ? resolve() : waiting.push({ n, resolve })));
  return { gc, flushes, batches, started };
}

/** Settles a push: its answer or its error. */
const settle = (p: Promise<string>) =>
  p.then(
    (out) => out,
    (err: unknown) => err as HeraldError,
  );

/** The Appender's words for its refusals. */
const wording = { items: 'events', written: 'appended', whenClosed: 'publish to another instance or retry shortly' };

/** A data error as pg reports it (SQLSTATE 22P02, invalid_text_representation). */
const dataError = () => Object.assign(new Error('invalid input syntax'), { code: '22P02' });

describe('GroupCommit: one write per flush', () => {
  it('with nothing in flight the first item goes at once, alone; items pushed meanwhile share the next flush, answered in order', async () => {
    const { gc, flushes, batches } = held();
    const a = gc.push({ name: 'a' });
    // Synchronously: no turn of the event loop waited for.
    expect(batches()).toEqual([['a']]);
    const rest = ['b', 'c', 'd'].map((name) => gc.push({ name }));
    expect(gc.waitingItems).toBe(3);
    flushes[0]!.commit();
    expect(await a).toBe('a!');
    flushes[1]!.commit();
    expect(await Promise.all(rest)).toEqual(['b!', 'c!', 'd!']);
    expect(batches()).toEqual([['a'], ['b', 'c', 'd']]);
  });

  it('the next flush starts before the finished flush’s callers are answered', async () => {
    const { gc, flushes, batches } = held();
    const a = gc.push({ name: 'a' });
    void gc.push({ name: 'b' });
    flushes[0]!.commit();
    await a;
    // When a's caller runs, b's flush is already out.
    expect(batches()).toEqual([['a'], ['b']]);
    flushes[1]!.commit();
    await gc.idle();
  });

  it('gatherTurn: items pushed in the same turn of the event loop go together', async () => {
    const { gc, flushes, batches } = held({ gatherTurn: true });
    const all = ['a', 'b', 'c'].map((name) => gc.push({ name }));
    expect(batches()).toEqual([]);
    const idle = gc.idle();
    await new Promise<void>((r) => setImmediate(r));
    expect(batches()).toEqual([['a', 'b', 'c']]);
    flushes[0]!.commit();
    await idle;
    expect(await Promise.all(all)).toEqual(['a!', 'b!', 'c!']);
  });

  it('gatherTurn: idle() resolves even when the turn a push waited for finds its item already taken', async () => {
    const flushes: string[][] = [];
    const gc: GroupCommit<string, string> = new GroupCommit<string, string>({
      write: async (items) => {
        flushes.push([...items]);
        // Pushed as `a`'s flush starts, with a slot free: it waits for the end of the turn,
        // but the loop starting `a`'s flush takes it into a second flush at once.
        if (items[0] === 'a') void gc.push('b');
        return items.map((i) => `${i}!`);
      },
      maxItems: 10,
      maxFlushes: 2,
      gatherTurn: true,
    });
    expect(await gc.push('a')).toBe('a!');
    await gc.idle();
    expect(flushes).toEqual([['a'], ['b']]);
  });

  it('a batch takes items within maxItems (by count) and maxBytes; an item bigger than either goes alone, never split', async () => {
    const { gc, flushes, batches, started } = held({ maxItems: 5, maxBytes: 100 });
    const x = gc.push({ name: 'x' });
    const items = [
      { name: 'a', count: 2 },
      { name: 'b', count: 3 },
      { name: 'c', count: 1 },
      { name: 'd', count: 4 },
      { name: 'e', count: 6 },
      { name: 'f', bytes: 60 },
      { name: 'g', bytes: 60 },
      { name: 'h', bytes: 150 },
      { name: 'i' },
    ];
    const answers = [x, ...items.map((i) => gc.push(i))];
    expect(gc.waitingItems).toBe(2 + 3 + 1 + 4 + 6 + 4);
    for (let n = 0; n < 7; n++) {
      flushes[n]!.commit();
      await started(n + 2);
    }
    flushes[7]!.commit();
    expect(await Promise.all(answers)).toEqual(['x!', ...items.map((i) => `${i.name}!`)]);
    expect(batches()).toEqual([['x'], ['a', 'b'], ['c', 'd'], ['e'], ['f'], ['g'], ['h'], ['i']]);
    expect(gc.waitingItems).toBe(0);
  });
});

describe('GroupCommit: one bad item fails only its caller', () => {
  it('a data error splits the batch: each item is written again alone, in order, and only the bad one gets the error', async () => {
    const flushes: string[][] = [];
    const gc = new GroupCommit<string, string>({
      write: async (items) => {
        flushes.push([...items]);
        if (items.includes('bad')) throw dataError();
        return items.map((i) => `${i}!`);
      },
      maxItems: 10,
    });
    const answers = ['a', 'b', 'bad', 'c'].map((i) => settle(gc.push(i)));
    const [a, b, bad, c] = await Promise.all(answers);
    expect([a, b, c]).toEqual(['a!', 'b!', 'c!']);
    expect(bad).toMatchObject({ code: '22P02' });
    // a alone (nothing in flight), then b, bad, c together, then each of them alone.
    expect(flushes).toEqual([['a'], ['b', 'bad', 'c'], ['b'], ['bad'], ['c']]);
  });

  it('a batch rolled back as a deadlock is written again item by item, each with its own answer', async () => {
    const flushes: string[][] = [];
    const gc = new GroupCommit<string, string>({
      write: async (items) => {
        flushes.push([...items]);
        // PostgreSQL's answer to the batch that lost a deadlock (SQLSTATE 40P01).
        if (items.length > 1 && items[0] === 'x') throw Object.assign(new Error('deadlock detected'), { code: '40P01' });
        return items.map((i) => `${i}!`);
      },
      maxItems: 10,
    });
    const answers = await Promise.all(['a', 'x', 'y'].map((i) => settle(gc.push(i))));
    expect(answers).toEqual(['a!', 'x!', 'y!']);
    expect(flushes).toEqual([['a'], ['x', 'y'], ['x'], ['y']]);
  });

  it('any other error fails every caller of the flush, and nothing is written again', async () => {
    const { gc, flushes, batches } = held();
    const first = settle(gc.push({ name: 'x' }));
    const rest = ['a', 'b'].map((name) => settle(gc.push({ name })));
    flushes[0]!.commit();
    await first;
    const lost = new Error('Connection terminated');
    flushes[1]!.fail(lost);
    expect(await Promise.all(rest)).toEqual([lost, lost]);
    expect(batches()).toEqual([['x'], ['a', 'b']]);
    // And it goes on writing.
    const next = gc.push({ name: 'y' });
    flushes[2]!.commit();
    expect(await next).toBe('y!');
  });
});

describe('GroupCommit: bounds', () => {
  it('a full queue refuses at once with unavailable and a Retry-After of 1 s, in the wording given; what was queued is written', async () => {
    const { gc, flushes, batches } = held({ maxQueueItems: 5, maxQueueBytes: 1000, wording });
    const first = gc.push({ name: 'x' });
    const queued = [gc.push({ name: 'a', count: 3 }), gc.push({ name: 'b', count: 2 })];
    const refused = (await settle(gc.push({ name: 'c' }))) as HeraldError;
    expect([refused.code, refused.retryable, refused.details, refused.message]).toEqual([
      'HERALD_ERR_UNAVAILABLE',
      true,
      { retryAfterS: 1 },
      '5 events are waiting to be appended, the most this server queues: retry after 1 s',
    ]);
    flushes[0]!.commit();
    await first;
    flushes[1]!.commit();
    expect(await Promise.all(queued)).toEqual(['a!', 'b!']);
    expect(batches()).toEqual([['x'], ['a', 'b']]);
  });

  it('the queue is bounded in bytes too; an item bigger than the whole queue is taken when the queue is empty', async () => {
    const { gc, flushes, batches } = held({ maxQueueBytes: 100 });
    const first = gc.push({ name: 'x' });
    const big = gc.push({ name: 'big', bytes: 150 });
    const refused = (await settle(gc.push({ name: 'a', bytes: 1 }))) as HeraldError;
    expect([refused.code, refused.message]).toEqual([
      'HERALD_ERR_UNAVAILABLE',
      '150 bytes of items are waiting to be written, the most this server queues: retry after 1 s',
    ]);
    flushes[0]!.commit();
    await first;
    flushes[1]!.commit();
    expect(await big).toBe('big!');
    expect(batches()).toEqual([['x'], ['big']]);
  });

  it('maxFlushes: that many flushes in flight at once, the next batch gathering behind them', async () => {
    const { gc, flushes, batches } = held({ maxFlushes: 2 });
    const all = ['a', 'b', 'c', 'd'].map((name) => gc.push({ name }));
    expect(batches()).toEqual([['a'], ['b']]);
    flushes[1]!.commit();
    expect(await all[1]).toBe('b!');
    expect(batches()).toEqual([['a'], ['b'], ['c', 'd']]);
    flushes[0]!.commit();
    flushes[2]!.commit();
    expect(await Promise.all(all)).toEqual(['a!', 'b!', 'c!', 'd!']);
    expect(batches()).toHaveLength(3);
  });
});

describe('GroupCommit: poke, idle and close', () => {
  it('poke() runs a flush with nothing queued; pokes while one is in flight fold into one flush after it, with what was pushed meanwhile', async () => {
    const { gc, flushes, batches, started } = held();
    gc.poke();
    expect(batches()).toEqual([[]]);
    gc.poke();
    gc.poke();
    const a = gc.push({ name: 'a' });
    gc.poke();
    const idle = gc.idle();
    flushes[0]!.commit();
    await started(2);
    flushes[1]!.commit();
    await idle;
    expect(await a).toBe('a!');
    expect(batches()).toEqual([[], ['a']]);
  });

  it('idle() resolves once nothing is queued or in flight, after every caller is answered', async () => {
    const { gc, flushes, started } = held();
    await gc.idle();
    const order: string[] = [];
    void gc.push({ name: 'a' }).then((out) => order.push(out));
    void gc.push({ name: 'b' }).then((out) => order.push(out));
    const idle = gc.idle().then(() => order.push('idle'));
    flushes[0]!.commit();
    await started(2);
    expect(order).toEqual([]);
    flushes[1]!.commit();
    await idle;
    expect(order).toEqual(['a!', 'b!', 'idle']);
  });

  it('close() refuses new items with shutting_down, flushes what is queued, then is closed', async () => {
    const { gc, flushes, batches } = held({ wording });
    const a = gc.push({ name: 'a' });
    const b = gc.push({ name: 'b' });
    const closed = gc.close();
    expect(gc.state).toBe('draining');
    const refused = (await settle(gc.push({ name: 'c' }))) as HeraldError;
    expect([refused.code, refused.message]).toEqual(['HERALD_ERR_SHUTTING_DOWN', 'server is shutting down: publish to another instance or retry shortly']);
    gc.poke();
    flushes[0]!.commit();
    await a;
    expect(gc.state).toBe('draining');
    flushes[1]!.commit();
    await closed;
    expect(gc.state).toBe('closed');
    expect(await b).toBe('b!');
    // The poke while draining ran no flush.
    expect(batches()).toEqual([['a'], ['b']]);
  });

  it('close() with nothing queued is closed at once', async () => {
    const { gc } = held();
    await gc.close();
    expect(gc.state).toBe('closed');
    await expect(gc.push({ name: 'a' })).rejects.toMatchObject({ code: 'HERALD_ERR_SHUTTING_DOWN', message: 'server is shutting down: retry shortly' });
  });
});
