/**
 * Grants (src/gateway/grants.ts): selectors as a token's claims carry them, what they cover
 * for reading, what a pattern narrows to, and the reserved namespaces a publisher reaches
 * only by naming them.
 */
import { describe, expect, it } from 'vitest';
import { Grants, RESERVED_NAMESPACES, reservedNamespaceOf } from '../../src/gateway/grants.ts';

describe('Grants.parse', () => {
  it('reads exact topics, `prefix*` and `*`; no claim and [] grant nothing', () => {
    const g = Grants.parse(['job:42', 'team:7:*'], 'herald.subscribe');
    expect(g.entries()).toEqual(['job:42', 'team:7:*']);
    expect(Grants.parse(['*'], 'x').all).toBe(true);
    for (const none of [undefined, []]) {
      const n = Grants.parse(none, 'x');
      expect([n.all, n.entries(), n.covers('a'), n.coversPrefix(''), n.coversPublish('a')]).toEqual([false, [], false, false, false]);
    }
  });

  it('refuses anything else with 401, naming the claim', () => {
    for (const bad of ['job:1', [1], ['Job:1'], ['a**'], { subscribe: ['a'] }]) {
      expect(() => Grants.parse(bad, 'herald.subscribe')).toThrow(
        expect.objectContaining({ code: 'HERALD_ERR_UNAUTHORIZED', message: expect.stringContaining('herald.subscribe') }),
      );
    }
  });
});

describe('reading', () => {
  const g = Grants.parse(['private:mine', 'private:team:*'], 'x');

  it('covers its exact topics and everything under its prefixes', () => {
    expect(['private:mine', 'private:team:1', 'private:team:', 'private:mine:x', 'private:other', 'private:team'].map((t) => g.covers(t))).toEqual([
      true,
      true,
      true,
      false,
      false,
      false,
    ]);
  });

  it('covers a whole pattern only under one of its prefixes (or `*`)', () => {
    expect(['private:team:', 'private:team:x', 'private:', 'private:t', ''].map((p) => g.coversPrefix(p))).toEqual([true, true, false, false, false]);
    expect(Grants.ALL.coversPrefix('')).toBe(true);
  });

  it('narrows a pattern to the selectors inside it', () => {
    expect(g.within('private:')).toEqual(['private:mine', 'private:team:*']);
    expect(g.within('private:m')).toEqual(['private:mine']);
    expect(g.within('private:x')).toEqual([]);
    expect(g.within('')).toEqual(['private:mine', 'private:team:*']);
  });
});

describe('reserved namespaces', () => {
  it('are job:*, jobs (and jobs:…), package:*, index (and index:…), and nothing that merely starts alike', () => {
    expect(RESERVED_NAMESPACES).toEqual(['job:', 'jobs', 'package:', 'index']);
    const topics = ['job:1', 'jobs', 'jobs:x', 'package:left-pad', 'index', 'index:x', 'job', 'jobsx', 'indexer', 'packages', 'demo:job:1'];
    expect(topics.map(reservedNamespaceOf)).toEqual([
      'job:',
      'jobs',
      'jobs',
      'package:',
      'index',
      'index',
      undefined,
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
  });

  it('a publish grant of `*` (a static publish token) covers every topic but them', () => {
    expect(['demo:a', 'jobsx', 'job', 'job:1', 'jobs', 'package:x', 'index'].map((t) => Grants.ALL.coversPublish(t))).toEqual([
      true,
      true,
      true,
      false,
      false,
      false,
      false,
    ]);
  });

  it('are reached only by selectors that name them: `job:*`, `job:42`, `jobs`; never by `*` or `j*`', () => {
    const g = Grants.parse(['job:*', 'jobs', 'j*', 'index:x'], 'herald.publish');
    expect(['job:1', 'jobs', 'jobs:x', 'index', 'index:x', 'jx', 'package:a'].map((t) => g.coversPublish(t))).toEqual([
      true,
      true,
      false,
      false,
      true,
      true,
      false,
    ]);
    expect(Grants.parse(['job:42'], 'x').coversPublish('job:42')).toBe(true);
    expect(Grants.parse(['job:42'], 'x').coversPublish('job:43')).toBe(false);
  });
});
